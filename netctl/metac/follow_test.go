package metac

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"metad/netctl"
)

// script is a fake metad for the follower: the statuses each host shows
// at successive status requests (the last one repeats), the reply to the
// command, and the requests it got.
type script struct {
	looks    map[string][]netctl.Service // by host: before, then each poll
	reply    map[string]*netctl.Reply    // by host: to the command; nil: no answer
	noStatus bool                        // an old metad: status is an unknown command
	asked    map[string]int
	cmds     []string
}

func (s *script) call(req netctl.Request, hosts []string, _ time.Duration) ([]netctl.Answer, error) {
	s.cmds = append(s.cmds, req.Command)
	var out []netctl.Answer
	for _, h := range hosts {
		switch {
		case req.Command == "status" && s.noStatus:
			out = append(out, netctl.Answer{Host: h, Reply: &netctl.Reply{Error: `unknown command "status" (commands: ...)`}})
		case req.Command == "list" && len(req.Args) == 0: // which services there are
			out = append(out, netctl.Answer{Host: h, Reply: &netctl.Reply{OK: true, Services: s.looks[h][:1]}})
		case req.Command == "status" || req.Command == "list":
			looks := s.looks[h]
			i := min(s.asked[h], len(looks)-1)
			s.asked[h]++
			out = append(out, netctl.Answer{Host: h, Reply: &netctl.Reply{OK: true, Services: []netctl.Service{looks[i]}}})
		case s.reply[h] == nil:
			out = append(out, netctl.Answer{Host: h, Err: "no answer"})
		default:
			out = append(out, netctl.Answer{Host: h, Reply: s.reply[h]})
		}
	}
	return out, nil
}

func TestFollower(t *testing.T) {
	okReply := &netctl.Reply{OK: true, Name: "box"}
	idle := svc{state: "idle", ready: no}.status()
	up := svc{state: "ready", ready: yes, starts: 1, pids: []int{812}}.status()
	crashed := svc{state: "backoff", ready: no, starts: 1, exits: 1, last: exit3}.status()
	next := time.Now().Add(time.Hour)
	crashed.NextStart = &next
	gone := svc{state: "disabled", ready: no, stop: killed2s}.status()
	tests := []struct {
		name   string
		args   []string
		hosts  []string
		s      *script
		stdout string
		stderr string
		status int
		cmds   string // the requests, in order
	}{
		{"start: ready", []string{"start", "web"}, []string{localHost},
			&script{looks: map[string][]netctl.Service{localHost: {idle, up}}, reply: map[string]*netctl.Reply{localHost: okReply}},
			"web: ready (pid 812)\n", "", exitOK, "list status start status status"},
		{"start: crashed", []string{"start", "web"}, []string{localHost},
			&script{looks: map[string][]netctl.Service{localHost: {idle, crashed}}, reply: map[string]*netctl.Reply{localHost: okReply}},
			"", "metac: web: not ready: exit status 3, next start in 1h0m0s\n", exitFailed, "list status start status"},
		{"start: refused", []string{"start", "web"}, []string{localHost},
			&script{looks: map[string][]netctl.Service{localHost: {idle}}, reply: map[string]*netctl.Reply{localHost: {Error: "service \"web\": already running its maximum of instances"}}},
			"", "metac: service \"web\": already running its maximum of instances\n", exitFailed, "list status start"},
		{"stop on two hosts, one silent", []string{"stop", "web"}, []string{"a", "b"},
			&script{looks: map[string][]netctl.Service{"a": {up, gone}, "b": {up}}, reply: map[string]*netctl.Reply{"a": okReply}},
			"a: web: killed after 2s\n", "metac: b: no answer\n", exitNoAnswer, "list status stop status"},
		{"stop as JSON", []string{"stop", "web", "--json"}, []string{localHost},
			&script{looks: map[string][]netctl.Service{localHost: {up, gone}}, reply: map[string]*netctl.Reply{localHost: okReply}},
			`{"host":"local","name":"box","ok":true,"error":"","outcomes":[{"service":"web","ok":true,"outcome":"killed after 2s"}]}` + "\n", "", exitOK, "list status stop status"},
		{"start as JSON, failed", []string{"--json", "start", "web"}, []string{localHost},
			&script{looks: map[string][]netctl.Service{localHost: {idle, crashed}}, reply: map[string]*netctl.Reply{localHost: okReply}},
			`{"host":"local","name":"box","ok":false,"error":"web: not ready: exit status 3, next start in 1h0m0s","outcomes":[{"service":"web","ok":false,"outcome":"not ready: exit status 3, next start in 1h0m0s"}]}` + "\n",
			"", exitFailed, "list status start status"},
		{"wait: not ready in time", []string{"wait", "-t", "250ms", "web"}, []string{localHost},
			&script{looks: map[string][]netctl.Service{localHost: {idle}}},
			"", "metac: web: not ready within 250ms: idle\n", exitFailed, "status status"},
		{"wait: ready", []string{"wait", "web"}, []string{localHost},
			&script{looks: map[string][]netctl.Service{localHost: {idle, up}}},
			"web: ready (pid 812)\n", "", exitOK, "status status status"},
		{"an unknown service: no wait, no status asked", []string{"stop", "nope"}, []string{localHost},
			&script{looks: map[string][]netctl.Service{localHost: {up}}, reply: map[string]*netctl.Reply{localHost: {Error: `unknown service "nope"`}}},
			"", "metac: unknown service \"nope\"\n", exitFailed, "list stop"},
		{"an old metad: list instead of status", []string{"stop", "web"}, []string{localHost},
			&script{noStatus: true, looks: map[string][]netctl.Service{localHost: {up, gone}}, reply: map[string]*netctl.Reply{localHost: okReply}},
			"web: killed after 2s\n", "", exitOK, "list status list stop list"},
	}
	for _, tt := range tests {
		o, err := parse(tt.args)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		tt.s.asked = map[string]int{}
		var out, errb bytes.Buffer
		p := &printer{prog: "metac", cmd: o.cmd, json: o.json, stdout: &out, stderr: &errb}
		status := (&follower{o: o, out: p, call: tt.s.call, hosts: tt.hosts}).run()
		if out.String() != tt.stdout || errb.String() != tt.stderr || status != tt.status {
			t.Errorf("%s: got status %d, stdout %q, stderr %q; want %d, %q, %q", tt.name, status, out.String(), errb.String(), tt.status, tt.stdout, tt.stderr)
		}
		if got := strings.Join(tt.s.cmds, " "); tt.cmds != "" && !strings.HasPrefix(got, tt.cmds) {
			t.Errorf("%s: got requests %q, want %q first", tt.name, got, tt.cmds)
		}
	}
}

func TestFollowerUnreachable(t *testing.T) {
	o, _ := parse([]string{"stop", "web", "--json"})
	var out, errb bytes.Buffer
	p := &printer{prog: "metac", cmd: o.cmd, json: true, stdout: &out, stderr: &errb}
	fail := func(netctl.Request, []string, time.Duration) ([]netctl.Answer, error) {
		return nil, errors.New("cannot reach metad at /run/metad.sock: connection refused")
	}
	status := (&follower{o: o, out: p, call: fail, hosts: []string{localHost}, failHost: localHost}).run()
	if status != exitUsage || errb.String() != "metac: cannot reach metad at /run/metad.sock: connection refused\n" ||
		out.String() != `{"host":"local","ok":false,"error":"cannot reach metad at /run/metad.sock: connection refused"}`+"\n" {
		t.Errorf("got status %d, stdout %q, stderr %q; want 2 and the error", status, out.String(), errb.String())
	}
}

func TestFollows(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"start", "web"}, true},
		{[]string{"stop", "web", "db"}, true},
		{[]string{"restart", "web", "-h", "a,b"}, true},
		{[]string{"wait", "web"}, true},
		{[]string{"stop", "--no-wait", "web"}, false},
		{[]string{"-b", "stop", "web"}, false},
		{[]string{"-h", "a", "--serial", "1", "restart", "web"}, false},
		{[]string{"kill", "web"}, false},
		{[]string{"enable", "web"}, false},
	} {
		o, err := parse(tt.args)
		if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if got := o.follows(); got != tt.want {
			t.Errorf("%q: got %v, want %v", tt.args, got, tt.want)
		}
	}
}
