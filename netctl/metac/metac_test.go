package metac

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"metad/netctl"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(o *options) bool
		err   string // "" for none
	}{
		{"local command", []string{"list"}, func(o *options) bool {
			return o.cmd == "list" && len(o.args) == 0 && !o.network() && o.wait() == defaultLocalWait
		}, ""},
		{"hosts", []string{"-h", "a,b:612, a", "stop", "web"}, func(o *options) bool {
			return slices.Equal(o.hosts, []string{"a", "b:612"}) && o.cmd == "stop" && slices.Equal(o.args, []string{"web"}) && o.wait() == defaultHostWait
		}, ""},
		{"-b alone before the command", []string{"-b", "list"}, func(o *options) bool {
			return o.bcast && !o.bcastTo.IsValid() && o.cmd == "list" && o.wait() == defaultBroadcastWait
		}, ""},
		{"-b with an address", []string{"-b", "10.1.255.255", "list"}, func(o *options) bool {
			return o.bcast && o.bcastTo == netip.MustParseAddr("10.1.255.255") && o.cmd == "list"
		}, ""},
		{"-b=address", []string{"-b=10.1.255.255", "version"}, func(o *options) bool {
			return o.bcastTo == netip.MustParseAddr("10.1.255.255") && o.cmd == "version"
		}, ""},
		{"relay", []string{"-r", "gw", "-b", "-t", "3s", "--json", "list"}, func(o *options) bool {
			return slices.Equal(o.relays, []string{"gw"}) && o.bcast && o.json && o.wait() == 3*time.Second
		}, ""},
		{"relays", []string{"-r", "gw1,gw2", "-b", "list", "-r", "gw3,gw1"}, func(o *options) bool {
			return slices.Equal(o.relays, []string{"gw1", "gw2", "gw3"}) && o.bcast
		}, ""},
		{"--hosts with -b", []string{"-b", "--hosts", "fleet", "list"}, func(o *options) bool {
			return o.hostsFile == "fleet" && o.bcast && o.wait() == defaultBroadcastWait
		}, ""},
		{"--hosts alone goes over the network", []string{"list", "--hosts=fleet"}, func(o *options) bool {
			return o.hostsFile == "fleet" && o.network() && o.wait() == defaultHostWait
		}, ""},
		{"double dashes and =", []string{"--p=612", "--k", "/k", "-s=/s", "-t", "2", "list"}, func(o *options) bool {
			return o.port == 612 && o.keyFile == "/k" && o.socket == "/s" && o.timeout == 2*time.Second
		}, ""},
		{"options after the command", []string{"list", "--json"}, func(o *options) bool {
			return o.cmd == "list" && len(o.args) == 0 && o.json
		}, ""},
		{"options between the arguments", []string{"stop", "web", "-t", "2s", "db", "-h", "a"}, func(o *options) bool {
			return o.cmd == "stop" && slices.Equal(o.args, []string{"web", "db"}) && o.timeout == 2*time.Second && slices.Equal(o.hosts, []string{"a"})
		}, ""},
		{"-b after the command", []string{"list", "-b"}, func(o *options) bool { return o.cmd == "list" && o.bcast && !o.bcastTo.IsValid() }, ""},
		{"-- ends the options", []string{"--", "list", "-x"}, func(o *options) bool {
			return o.cmd == "list" && slices.Equal(o.args, []string{"-x"})
		}, ""},
		{"-- after the command", []string{"list", "--json", "--", "--json"}, func(o *options) bool {
			return o.cmd == "list" && o.json && slices.Equal(o.args, []string{"--json"})
		}, ""},
		{"-V needs no command", []string{"-V"}, func(o *options) bool { return o.version }, ""},
		{"--version", []string{"--version"}, func(o *options) bool { return o.version }, ""},
		{"--help", []string{"--help"}, func(o *options) bool { return o.help }, ""},
		{"--help after a command", []string{"stop", "--help"}, func(o *options) bool { return o.help }, ""},
		{"help as a command", []string{"help"}, func(o *options) bool { return o.help }, ""},
		{"kill with a signal", []string{"kill", "web", "HUP"}, nil, ""},
		{"debug stacks", []string{"debug", "stacks"}, func(o *options) bool { return o.cmd == "debug" }, ""},
		{"--serial", []string{"-h", "a,b", "--serial", "5", "--keep-going", "--ready-wait=10s", "restart", "web"}, func(o *options) bool {
			return o.serial == 5 && o.keepGoing && o.readyWait.Seconds() == 10
		}, ""},
		{"--serial with --hosts and -b", []string{"-b", "--hosts", "f", "--serial", "2", "reload"}, func(o *options) bool { return o.serial == 2 }, ""},
		{"--serial without hosts", []string{"-b", "--serial", "2", "reload"}, nil, "--serial needs the hosts"},
		{"--serial of list", []string{"-h", "a", "--serial", "2", "list"}, nil, "--serial rolls out"},
		{"--serial 0", []string{"-h", "a", "--serial", "0", "stop", "web"}, nil, `invalid --serial "0"`},
		{"--keep-going alone", []string{"-h", "a", "--keep-going", "stop", "web"}, nil, "--keep-going goes with --serial"},
		{"--summary", []string{"-b", "--summary", "list"}, func(o *options) bool { return o.summary }, ""},
		{"--summary of stop", []string{"-b", "--summary", "stop", "web"}, nil, "--summary summarizes"},
		{"--no-wait", []string{"stop", "--no-wait", "web"}, func(o *options) bool { return o.noWait && o.cmd == "stop" }, ""},
		{"--no-wait with kill", []string{"kill", "--no-wait", "web"}, nil, "--no-wait goes with start, stop, restart, not kill"},
		{"--no-wait with --serial", []string{"-h", "a", "--serial", "1", "--no-wait", "restart", "web"}, nil, "--no-wait and --serial cannot be used together"},
		{"wait", []string{"wait", "-t", "30s", "web", "db"}, func(o *options) bool {
			return o.cmd == "wait" && slices.Equal(o.args, []string{"web", "db"}) && o.timeout == 30*time.Second
		}, ""},
		{"wait for nothing", []string{"wait"}, nil, "usage: wait SERVICE..."},
		{"wait on a broadcast", []string{"-b", "wait", "web"}, nil, "wait asks the hosts it waits on"},
		{"wait over the network", []string{"-h", "a,b", "wait", "web"}, func(o *options) bool { return o.follows() }, ""},
		{"mistyped wait", []string{"wiat", "web"}, nil, `unknown command "wiat" (did you mean "wait"?)`},
		{"no command", []string{"--json"}, nil, "no command given"},
		{"unknown flag", []string{"-x", "list"}, nil, "flag provided but not defined: -x"},
		{"unknown flag after the command", []string{"kill", "web", "-9"}, nil, "flag provided but not defined: -9"},
		{"missing value", []string{"-p"}, nil, "flag needs an argument: -p"},
		{"-h without a host", []string{"list", "-h"}, nil, "flag needs an argument: -h HOST (help is --help)"},
		{"bad port", []string{"-p", "70000", "list"}, nil, `invalid -p "70000"`},
		{"bad timeout", []string{"-t", "soon", "list"}, nil, `invalid -t "soon"`},
		{"zero timeout", []string{"-t", "0", "list"}, nil, `invalid -t "0"`},
		{"IPv6 broadcast", []string{"-b=fe80::1", "list"}, nil, "not an IPv4 address"},
		{"empty host", []string{"-h", "a,,b", "list"}, nil, "empty host name"},
		{"empty relay", []string{"-r", "gw,", "-b", "list"}, nil, `invalid -r "gw,": empty host name`},
		{"--hosts without a file", []string{"list", "--hosts"}, nil, "flag needs an argument: -hosts"},
		{"debug to the hosts of a file", []string{"--hosts", "f", "debug", "stacks"}, nil, "local socket only"},
		{"-h and -b", []string{"-h", "a", "-b", "list"}, nil, "-h and -b cannot be used together"},
		{"-r without -b", []string{"-r", "gw", "list"}, nil, "-r RELAY needs -b"},
		{"-r with an address", []string{"-r", "gw", "-b", "10.0.0.255", "list"}, nil, "-r RELAY takes -b without an address"},
		{"unknown command", []string{"frobnicate"}, nil, `unknown command "frobnicate" (commands: debug, disable, enable, halt, help, kill, list, `},
		{"mistyped command", []string{"lsit"}, nil, `unknown command "lsit" (did you mean "list"?)`},
		{"mistyped command in capitals", []string{"Stpo", "web"}, nil, `unknown command "Stpo" (did you mean "stop"?)`},
		{"mistyped help", []string{"hlep"}, nil, `unknown command "hlep" (did you mean "help"?)`},
		{"bad arguments", []string{"start"}, nil, "usage: start SERVICE"},
		{"bad signal", []string{"kill", "web", "NOPE"}, nil, `invalid signal "NOPE"`},
		{"flag with a value it does not take", []string{"--json=yes", "list"}, nil, "takes no value"},
		{"debug over the network", []string{"-h", "a", "debug", "stacks"}, nil, "debug works on the local socket only"},
		{"debug of something else", []string{"debug", "heap"}, nil, `unknown debug topic "heap"`},
	}
	for _, tt := range tests {
		o, err := parse(tt.args)
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

func TestParseErrorKeepsJSON(t *testing.T) {
	for _, args := range [][]string{{"-x", "list", "--json"}, {"--json", "lsit"}, {"list", "-p", "0", "--json"}} {
		if o, err := parse(args); err == nil || !o.json {
			t.Errorf("%q: got error %v, json %v; want an error, and json on", args, err, o.json)
		}
	}
}

func TestSuggest(t *testing.T) {
	cmds := commandNames()
	tests := []struct{ word, want string }{
		{"lsit", "list"},  // a swap
		{"lst", "list"},   // a letter left out
		{"listt", "list"}, // one too many
		{"restrat", "restart"},
		{"RELOAD", "reload"}, // case is not a typo
		{"stpo", "stop"},
		{"rebot", "reboot"},
		{"st", ""},         // too short to guess
		{"frobnicate", ""}, // nothing close
		{"x", ""},
		{strings.Repeat("list", 10), ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.word, cmds); got != tt.want {
			t.Errorf("suggest(%q): got %q, want %q", tt.word, got, tt.want)
		}
	}
}

func TestTypoDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"list", "list", 0},
		{"", "list", 4},
		{"lsit", "list", 1},
		{"lits", "list", 1},
		{"kitten", "sitting", 3},
		{"ca", "abc", 3}, // no edit twice: not 2 as Damerau's unrestricted distance
	}
	for _, tt := range tests {
		if got := typoDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("typoDistance(%q, %q): got %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := typoDistance(tt.b, tt.a); got != tt.want {
			t.Errorf("typoDistance(%q, %q): got %d, want %d", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestMainOutput(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	empty := filepath.Join(t.TempDir(), "fleet")
	if err := os.WriteFile(empty, []byte("# nobody yet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		stdout string // a prefix of it, or "" for nothing
		stderr string // a prefix of it, or "" for nothing
		status int
	}{
		{"bare: help on stderr", nil, "", "usage: metac [OPTION...] COMMAND [ARG...] [OPTION...]\n", exitUsage},
		{"--help on stdout", []string{"--help"}, "usage: metac [OPTION...] COMMAND [ARG...] [OPTION...]\n", "", exitOK},
		{"help on stdout", []string{"help"}, "usage: metac ", "", exitOK},
		{"--version", []string{"--version"}, "metac 1.2.3\n", "", exitOK},
		{"-V after a command", []string{"list", "-V"}, "metac 1.2.3\n", "", exitOK},
		{"usage error", []string{"lsit"}, "", "metac: unknown command \"lsit\" (did you mean \"list\"?) (see metac --help)\n", exitUsage},
		{"usage error as JSON", []string{"lsit", "--json"}, `{"host":"","ok":false,"error":"unknown command \"lsit\" (did you mean \"list\"?)"}` + "\n",
			"metac: unknown command", exitUsage},
		{"unreachable", []string{"-s", sock, "list"}, "", "metac: cannot reach metad at " + sock + ": ", exitUsage},
		{"unreachable as JSON", []string{"list", "-s", sock, "--json"}, `{"host":"local","ok":false,"error":"cannot reach metad at ` + sock + `: `,
			"metac: cannot reach metad at " + sock + ": ", exitUsage},
		{"an empty hosts file", []string{"--hosts", empty, "list"}, "", "metac: no hosts in " + empty + "\n", exitUsage},
		{"no key as JSON", []string{"list", "-h", "127.0.0.1", "-k", sock, "--json"}, `{"host":"","ok":false,"error":"cannot read key file \"` + sock + `\": `,
			"metac: cannot read key file", exitUsage},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		status := Main("metac", tt.args, "1.2.3", &out, &errb)
		if status != tt.status || !hasPrefix(out.String(), tt.stdout) || !hasPrefix(errb.String(), tt.stderr) {
			t.Errorf("%s: got status %d, stdout\n%s\nstderr\n%s\nwant status %d, stdout starting\n%s\nstderr starting\n%s",
				tt.name, status, out.String(), errb.String(), tt.status, tt.stdout, tt.stderr)
		}
		if strings.Contains(tt.name, "JSON") && strings.Count(out.String(), "\n") != 1 {
			t.Errorf("%s: got stdout %q, want one line of JSON", tt.name, out.String())
		}
	}
}

// hasPrefix reports whether s starts with prefix, and is empty when prefix is.
func hasPrefix(s, prefix string) bool {
	if prefix == "" {
		return s == ""
	}
	return strings.HasPrefix(s, prefix)
}

func TestPrinter(t *testing.T) {
	started := time.Date(2026, 3, 4, 5, 6, 7, 0, time.Local)
	svcs := []netctl.Service{
		{Name: "web", Class: "daemon", Enabled: true, State: "running", Restarts: 2,
			Instances: []netctl.Instance{{PID: 41, Started: started}, {PID: 4242, Started: started}}},
		{Name: "echo-service", Class: "stream", State: "disabled", Port: 7007, Instances: []netctl.Instance{}},
	}
	ok := &netctl.Reply{Version: 1, OK: true, Name: "box", Services: svcs}
	tests := []struct {
		name    string
		cmd     string
		multi   bool
		json    bool
		results []netctl.Answer
		stdout  string
		stderr  string
		status  int
	}{
		{"one host's table", "list", false, false, []netctl.Answer{{Host: localHost, Reply: ok}}, "" +
			"NAME          CLASS   ENABLED  STATE     READY  PORT  RESTARTS  LAST EXIT  NEXT  PID   STARTED\n" +
			"web           daemon  yes      running   yes    -     2         -          -     41    2026-03-04 05:06:07\n" +
			"                                                                                 4242  2026-03-04 05:06:07\n" +
			"echo-service  stream  no       disabled  no     7007  0         -          -     -     -\n", "", exitOK},
		{"several hosts: headers, errors and silence", "list", true, false, []netctl.Answer{
			{Host: "10.0.0.1", Reply: &netctl.Reply{OK: true, Name: "a", Services: svcs[1:]}},
			{Host: "10.0.0.2", Reply: &netctl.Reply{Error: `unknown service "x"`}},
			{Host: "10.0.0.3", Err: "no answer"},
			{Host: "10.0.0.4", Reply: &netctl.Reply{OK: true, Name: "10.0.0.4", Services: svcs[1:]}},
		}, "" +
			"==> 10.0.0.1 (a) <==\n" +
			"NAME          CLASS   ENABLED  STATE     READY  PORT  RESTARTS  LAST EXIT  NEXT  PID  STARTED\n" +
			"echo-service  stream  no       disabled  no     7007  0         -          -     -    -\n" +
			"\n==> 10.0.0.4 <==\n" +
			"NAME          CLASS   ENABLED  STATE     READY  PORT  RESTARTS  LAST EXIT  NEXT  PID  STARTED\n" +
			"echo-service  stream  no       disabled  no     7007  0         -          -     -    -\n",
			"metac: 10.0.0.2: unknown service \"x\"\nmetac: 10.0.0.3: no answer\n", exitNoAnswer},
		{"local error lines", "reload", false, false, []netctl.Answer{{Host: localHost, Reply: &netctl.Reply{Error: "a:1:2: bad\na:3:4: worse"}}},
			"", "metac: a:1:2: bad\nmetac: a:3:4: worse\n", exitFailed},
		{"quiet success", "stop", false, false, []netctl.Answer{{Host: "web1", Reply: &netctl.Reply{OK: true}}}, "", "", exitOK},
		{"success named", "stop", true, false, []netctl.Answer{{Host: "10.0.0.1", Reply: &netctl.Reply{OK: true}}}, "10.0.0.1: ok\n", "", exitOK},
		{"version", "version", false, false, []netctl.Answer{{Host: localHost, Reply: &netctl.Reply{OK: true, Metad: "1.0"}}}, "metad 1.0\n", "", exitOK},
		{"versions", "version", true, false, []netctl.Answer{{Host: "h", Reply: &netctl.Reply{OK: true, Metad: "1.0"}}}, "h: metad 1.0\n", "", exitOK},
		{"debug stacks as they are", "debug", false, false, []netctl.Answer{{Host: localHost, Reply: &netctl.Reply{OK: true, Stacks: "goroutine 1 [running]:\nmain.main()\n"}}},
			"goroutine 1 [running]:\nmain.main()\n", "", exitOK},
		{"debug stacks as JSON", "debug", false, true, []netctl.Answer{{Host: localHost, Reply: &netctl.Reply{OK: true, Stacks: "goroutine 1 [running]:\n"}}},
			`{"host":"local","ok":true,"error":"","stacks":"goroutine 1 [running]:\n"}` + "\n", "", exitOK},
		{"json", "list", true, true, []netctl.Answer{
			{Host: "10.0.0.1", Reply: &netctl.Reply{OK: true, Name: "a"}},
			{Host: "10.0.0.2", Err: "incomplete reply: 1 of 2 parts arrived"},
			{Host: "10.0.0.3", Reply: &netctl.Reply{Error: "no"}},
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
	p.print([]netctl.Answer{{Host: "h", Reply: &netctl.Reply{OK: true, Services: []netctl.Service{
		{Name: "web", Class: "daemon", Enabled: true, Instances: []netctl.Instance{{PID: 7, Started: started}}},
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

// FuzzParse feeds parse command lines of words split at NUL bytes: it must
// never panic, and a command line it takes has a command metad carries
// out, with arguments it accepts.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"list", "list\x00--json", "-t\x002s\x00stop\x00web", "-b\x0010.0.0.255\x00-r\x00a,b\x00version",
		"--\x00list\x00-x", "kill\x00web\x00HUP", "wait\x00-t\x005s\x00web", "stop\x00--no-wait\x00web", "--hosts=f\x00debug\x00stacks", "lsit", "-h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := parse(strings.Split(s, "\x00"))
		if o == nil {
			t.Fatalf("got no options for %q", s)
		}
		if err != nil || o.help || o.version {
			return
		}
		if err := checkCommand(o.cmd, o.args); err != nil {
			t.Fatalf("%q: took command %q %q, which metad refuses: %v", s, o.cmd, o.args, err)
		}
		if o.cmd == waitCommand && o.bcast {
			t.Fatalf("%q: took wait on a broadcast", s)
		}
		if len(o.relays) > 0 && !o.bcast || len(o.hosts) > 0 && o.bcast {
			t.Fatalf("%q: took targets hosts %q, relays %q, broadcast %v", s, o.hosts, o.relays, o.bcast)
		}
	})
}
