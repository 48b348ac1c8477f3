package netctl

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseCLI(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(o *cliOptions) bool
		err   string // "" for none
	}{
		{"local command", []string{"list"}, func(o *cliOptions) bool {
			return o.cmd == "list" && len(o.args) == 0 && !o.network() && o.wait() == defaultLocalWait
		}, ""},
		{"hosts", []string{"-h", "a,b:612, a", "stop", "web"}, func(o *cliOptions) bool {
			return slices.Equal(o.hosts, []string{"a", "b:612"}) && o.cmd == "stop" && slices.Equal(o.args, []string{"web"}) && o.wait() == defaultHostWait
		}, ""},
		{"-b alone before the command", []string{"-b", "list"}, func(o *cliOptions) bool {
			return o.bcast && !o.bcastTo.IsValid() && o.cmd == "list" && o.wait() == defaultBroadcastWait
		}, ""},
		{"-b with an address", []string{"-b", "10.1.255.255", "list"}, func(o *cliOptions) bool {
			return o.bcast && o.bcastTo == netip.MustParseAddr("10.1.255.255") && o.cmd == "list"
		}, ""},
		{"-b=address", []string{"-b=10.1.255.255", "version"}, func(o *cliOptions) bool {
			return o.bcastTo == netip.MustParseAddr("10.1.255.255") && o.cmd == "version"
		}, ""},
		{"relay", []string{"-r", "gw", "-b", "-t", "3s", "--json", "list"}, func(o *cliOptions) bool {
			return o.relay == "gw" && o.bcast && o.json && o.wait() == 3*time.Second
		}, ""},
		{"double dashes and =", []string{"--p=612", "--k", "/k", "-s=/s", "-t", "2", "list"}, func(o *cliOptions) bool {
			return o.port == 612 && o.keyFile == "/k" && o.socket == "/s" && o.timeout == 2*time.Second
		}, ""},
		{"-- ends the flags", []string{"--", "list", "-x"}, func(o *cliOptions) bool {
			return o.cmd == "list" && slices.Equal(o.args, []string{"-x"})
		}, ""},
		{"-V needs no command", []string{"-V"}, func(o *cliOptions) bool { return o.version }, ""},
		{"--help", []string{"--help"}, func(o *cliOptions) bool { return o.help }, ""},
		{"kill with a signal", []string{"kill", "web", "HUP"}, nil, ""},
		{"no command", nil, nil, "no command given"},
		{"unknown flag", []string{"-x", "list"}, nil, "flag provided but not defined: -x"},
		{"missing value", []string{"-p"}, nil, "flag needs an argument: -p"},
		{"bad port", []string{"-p", "70000", "list"}, nil, `invalid -p "70000"`},
		{"bad timeout", []string{"-t", "soon", "list"}, nil, `invalid -t "soon"`},
		{"zero timeout", []string{"-t", "0", "list"}, nil, `invalid -t "0"`},
		{"IPv6 broadcast", []string{"-b=fe80::1", "list"}, nil, "not an IPv4 address"},
		{"empty host", []string{"-h", "a,,b", "list"}, nil, "empty host name"},
		{"-h and -b", []string{"-h", "a", "-b", "list"}, nil, "-h and -b cannot be used together"},
		{"-r without -b", []string{"-r", "gw", "list"}, nil, "-r RELAY needs -b"},
		{"-r with an address", []string{"-r", "gw", "-b", "10.0.0.255", "list"}, nil, "-r RELAY takes -b without an address"},
		{"unknown command", []string{"frobnicate"}, nil, `unknown command "frobnicate"`},
		{"bad arguments", []string{"start"}, nil, "usage: start SERVICE"},
		{"bad signal", []string{"kill", "web", "NOPE"}, nil, `invalid signal "NOPE"`},
		{"flag with a value it does not take", []string{"--json=yes", "list"}, nil, "takes no value"},
	}
	for _, tt := range tests {
		o, err := parseCLI(tt.args)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: got %v, want no error", tt.name, err)
			continue
		}
		if tt.check != nil && !tt.check(o) {
			t.Errorf("%s: got %+v, not what was asked", tt.name, o)
		}
	}
}

func TestPrinter(t *testing.T) {
	started := time.Date(2026, 3, 4, 5, 6, 7, 0, time.Local)
	svcs := []Service{
		{Name: "web", Class: "daemon", Enabled: true, State: "running", Restarts: 2,
			Instances: []Instance{{PID: 41, Started: started}, {PID: 4242, Started: started}}},
		{Name: "echo-service", Class: "stream", State: "disabled", Port: 7007, Instances: []Instance{}},
	}
	ok := &Reply{Version: 1, OK: true, Name: "box", Services: svcs}
	tests := []struct {
		name    string
		cmd     string
		multi   bool
		json    bool
		results []result
		stdout  string
		stderr  string
		status  int
	}{
		{"one host's table", "list", false, false, []result{{host: localHostName, reply: ok}}, "" +
			"NAME          CLASS   ENABLED  STATE     PORT  RESTARTS  NEXT  PID   STARTED\n" +
			"web           daemon  yes      running   -     2         -     41    2026-03-04 05:06:07\n" +
			"                                                               4242  2026-03-04 05:06:07\n" +
			"echo-service  stream  no       disabled  7007  0         -     -     -\n", "", exitOK},
		{"several hosts: headers, errors and silence", "list", true, false, []result{
			{host: "10.0.0.1", reply: &Reply{OK: true, Name: "a", Services: svcs[1:]}},
			{host: "10.0.0.2", reply: &Reply{Error: `unknown service "x"`}},
			{host: "10.0.0.3", err: "no answer"},
			{host: "10.0.0.4", reply: &Reply{OK: true, Name: "10.0.0.4", Services: svcs[1:]}},
		}, "" +
			"==> 10.0.0.1 (a) <==\n" +
			"NAME          CLASS   ENABLED  STATE     PORT  RESTARTS  NEXT  PID  STARTED\n" +
			"echo-service  stream  no       disabled  7007  0         -     -    -\n" +
			"\n==> 10.0.0.4 <==\n" +
			"NAME          CLASS   ENABLED  STATE     PORT  RESTARTS  NEXT  PID  STARTED\n" +
			"echo-service  stream  no       disabled  7007  0         -     -    -\n",
			"metac: 10.0.0.2: unknown service \"x\"\nmetac: 10.0.0.3: no answer\n", exitNoAnswer},
		{"local error lines", "reload", false, false, []result{{host: localHostName, reply: &Reply{Error: "a:1:2: bad\na:3:4: worse"}}},
			"", "metac: a:1:2: bad\nmetac: a:3:4: worse\n", exitFailed},
		{"quiet success", "stop", false, false, []result{{host: "web1", reply: &Reply{OK: true}}}, "", "", exitOK},
		{"success named", "stop", true, false, []result{{host: "10.0.0.1", reply: &Reply{OK: true}}}, "10.0.0.1: ok\n", "", exitOK},
		{"version", "version", false, false, []result{{host: localHostName, reply: &Reply{OK: true, Metad: "1.0"}}}, "metad 1.0\n", "", exitOK},
		{"versions", "version", true, false, []result{{host: "h", reply: &Reply{OK: true, Metad: "1.0"}}}, "h: metad 1.0\n", "", exitOK},
		{"json", "list", true, true, []result{
			{host: "10.0.0.1", reply: &Reply{OK: true, Name: "a"}},
			{host: "10.0.0.2", err: "incomplete reply: 1 of 2 parts arrived"},
			{host: "10.0.0.3", reply: &Reply{Error: "no"}},
		}, "" +
			`{"host":"10.0.0.1","name":"a","ok":true,"error":"","services":[]}` + "\n" +
			`{"host":"10.0.0.2","ok":false,"error":"incomplete reply: 1 of 2 parts arrived"}` + "\n" +
			`{"host":"10.0.0.3","ok":false,"error":"no"}` + "\n", "", exitNoAnswer},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		p := &printer{prog: "metac", cmd: tt.cmd, json: tt.json, multi: tt.multi, stdout: &out, stderr: &errb}
		status := p.print(tt.results)
		if out.String() != tt.stdout || errb.String() != tt.stderr || status != tt.status {
			t.Errorf("%s: got status %d, stdout\n%s\nstderr\n%s\nwant status %d, stdout\n%s\nstderr\n%s", tt.name, status, out.String(), errb.String(), tt.status, tt.stdout, tt.stderr)
		}
	}
}

func TestPrinterJSONSchema(t *testing.T) {
	started := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var out bytes.Buffer
	p := &printer{prog: "metac", cmd: "list", json: true, stdout: &out, stderr: &out}
	p.print([]result{{host: "h", reply: &Reply{OK: true, Services: []Service{
		{Name: "web", Class: "daemon", Enabled: true, Instances: []Instance{{PID: 7, Started: started}}},
		{Name: "echo", Class: "stream", Port: 7007},
	}}}})
	var got struct {
		Host     string
		OK       bool
		Services []map[string]any
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("got %q: %v", out.String(), err)
	}
	web, echo := got.Services[0], got.Services[1]
	inst := web["instances"].([]any)[0].(map[string]any)
	if web["name"] != "web" || web["class"] != "daemon" || web["enabled"] != true || inst["pid"] != 7.0 || inst["started"] != "2026-03-04T05:06:07Z" {
		t.Errorf("got %v, want web with instance pid 7 started at 2026-03-04T05:06:07Z", web)
	}
	if _, ok := web["port"]; ok {
		t.Errorf("got a port for a daemon: %v", web)
	}
	if echo["port"] != 7007.0 || echo["instances"] == nil || len(echo["instances"].([]any)) != 0 {
		t.Errorf("got %v, want port 7007 and an empty instances array", echo)
	}
}
