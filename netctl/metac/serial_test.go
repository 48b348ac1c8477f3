package metac

import (
	"strings"
	"testing"

	"metad/netctl"
)

func TestReady(t *testing.T) {
	in := []netctl.Instance{{PID: 1}}
	for _, tt := range []struct {
		s    netctl.Service
		want bool
	}{
		{netctl.Service{Class: "daemon", State: "ready", Instances: in}, true},
		{netctl.Service{Class: "daemon", State: "running", Instances: in}, true},
		{netctl.Service{Class: "daemon", State: "running"}, false},
		{netctl.Service{Class: "daemon", State: "idle", Enabled: true}, false},
		{netctl.Service{Class: "listener", State: "idle", Enabled: true}, true},
		{netctl.Service{Class: "stream", State: "disabled"}, false},
		{netctl.Service{Class: "daemon", State: "disabled", Instances: in}, true}, // metac start of a disabled daemon
		{netctl.Service{Class: "daemon", State: "disabled"}, false},
		{netctl.Service{Class: "daemon", State: "running", Ready: no, Instances: in}, false}, // metad says
		{netctl.Service{Class: "daemon", State: "starting", Ready: yes, Instances: in}, true},
		{netctl.Service{Class: "daemon", State: "starting", Instances: in}, false},
		{netctl.Service{Class: "daemon", State: "backoff"}, false},
		{netctl.Service{Class: "daemon", State: "failed"}, false},
	} {
		if got := ready(tt.s); got != tt.want {
			t.Errorf("%+v: got %v, want %v", tt.s, got, tt.want)
		}
	}
}

func TestCameBack(t *testing.T) {
	web := func(state string, pids ...int) netctl.Service {
		s := netctl.Service{Name: "web", Class: "daemon", State: state, Enabled: true}
		for _, p := range pids {
			s.Instances = append(s.Instances, netctl.Instance{PID: p})
		}
		return s
	}
	db := netctl.Service{Name: "db", Class: "daemon", State: "backoff"}
	for _, tt := range []struct {
		name        string
		cmd         string
		before, now []netctl.Service
		all         bool
		want        bool
		why         string
	}{
		{"restarted", "restart", []netctl.Service{web("running", 10)}, []netctl.Service{web("running", 11)}, false, true, ""},
		{"old instance", "restart", []netctl.Service{web("running", 10)}, []netctl.Service{web("running", 10)}, false, false, "web still runs its old instances"},
		{"in backoff", "restart", []netctl.Service{web("running", 10)}, []netctl.Service{web("backoff")}, false, false, "web is backoff"},
		{"started", "start", nil, []netctl.Service{web("ready", 3)}, false, true, ""},
		{"reload: not ready before, not waited for", "reload", []netctl.Service{web("running", 10), db}, []netctl.Service{web("running", 10), db}, true, true, ""},
		{"reload: ready before, not now", "reload", []netctl.Service{web("running", 10)}, []netctl.Service{web("stopping", 10)}, true, false, "web is stopping"},
	} {
		got, why := cameBack(tt.cmd, tt.before, tt.now, tt.all)
		if got != tt.want || why != tt.why {
			t.Errorf("%s: got %v %q, want %v %q", tt.name, got, why, tt.want, tt.why)
		}
	}
}

func TestSummary(t *testing.T) {
	svc := func(name, state string) netctl.Service {
		return netctl.Service{Name: name, Class: "daemon", State: state, Instances: []netctl.Instance{{PID: 1}}}
	}
	answers := []netctl.Answer{
		{Host: "a", Reply: &netctl.Reply{OK: true, Services: []netctl.Service{svc("web", "running"), svc("db", "ready")}}},
		{Host: "b", Reply: &netctl.Reply{OK: true, Services: []netctl.Service{svc("web", "backoff"), svc("db", "starting")}}},
		{Host: "c", Reply: &netctl.Reply{OK: true, Services: []netctl.Service{svc("web", "failed")}}},
		{Host: "d", Err: "no answer"},
	}
	var out, errOut strings.Builder
	p := &printer{prog: "metac", cmd: "list", stdout: &out, stderr: &errOut}
	if status := p.printSummary(answers); status != exitNoAnswer {
		t.Errorf("got status %d, want %d", status, exitNoAnswer)
	}
	want := "SERVICE  HOSTS  READY  STARTING  BACKOFF  FAILED  OTHER  NOT READY\n" +
		"web      3      1      0         1        1       0      b (backoff), c (failed)\n" +
		"db       2      1      1         0        0       0      b (starting)\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	if errOut.String() != "metac: d: no answer\n" {
		t.Errorf("got stderr %q, want d without an answer", errOut.String())
	}
}

func TestSameInstances(t *testing.T) {
	svc := func(name string, pids ...int) netctl.Service {
		s := netctl.Service{Name: name}
		for _, p := range pids {
			s.Instances = append(s.Instances, netctl.Instance{PID: p})
		}
		return s
	}
	a := []netctl.Service{svc("web", 1), svc("db", 2, 3)}
	for _, tt := range []struct {
		b    []netctl.Service
		want bool
	}{
		{[]netctl.Service{svc("web", 1), svc("db", 2, 3)}, true},
		{[]netctl.Service{svc("web", 4), svc("db", 2, 3)}, false},
		{[]netctl.Service{svc("web", 1)}, false},
		{[]netctl.Service{svc("db", 2, 3), svc("web", 1)}, false},
	} {
		if got := sameInstances(a, tt.b); got != tt.want {
			t.Errorf("%v: got %v, want %v", tt.b, got, tt.want)
		}
	}
}
