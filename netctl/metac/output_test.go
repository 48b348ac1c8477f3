package metac

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"metad/netctl"
)

// yes and no are the pointers Service.Ready takes.
var (
	yes = func() *bool { b := true; return &b }()
	no  = func() *bool { b := false; return &b }()
)

func TestWriteTable(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.Local)
	started, next := now.Add(-time.Minute), now.Add(90*time.Second)
	tests := []struct {
		name string
		svc  netctl.Service
		want string // the service's line, without the header
	}{
		{"ready with a pid", netctl.Service{Name: "web", Class: "daemon", Enabled: true, State: "ready", Ready: yes,
			Instances: []netctl.Instance{{PID: 812, Started: started}}},
			"web   daemon  yes      ready     yes    -     0         -          -       812  2026-03-04 05:05:07"},
		{"backoff after exit 3", netctl.Service{Name: "web", Class: "daemon", Enabled: true, State: "backoff", Ready: no, Restarts: 4,
			LastExit: &netctl.LastExit{Status: "exit status 3", Code: 3}, NextStart: &next},
			"web   daemon  yes      backoff   no     -     4         exit 3     in 1m30s  -    -"},
		{"killed by a signal", netctl.Service{Name: "web", Class: "daemon", State: "failed", Ready: no,
			LastExit: &netctl.LastExit{Status: "signal 9 (killed)", Code: 137}},
			"web   daemon  no       failed    no     -     0         signal 9   -       -    -"},
		{"stream listening", netctl.Service{Name: "echo", Class: "stream", Enabled: true, State: "idle", Ready: yes, Port: 7007},
			"echo  stream  yes      idle      yes    7007  0         -          -       -    -"},
		{"custody while stopping", netctl.Service{Name: "web", Class: "daemon", State: "stopping", Ready: no, Custody: []int{20, 21},
			LastExit: &netctl.LastExit{Status: "exit status 0"}},
			"web   daemon  no       stopping(+2)  no     -     0         exit 0     -       -    -"},
		{"an old metad: ready from the state", netctl.Service{Name: "web", Class: "daemon", Enabled: true, State: "running",
			Instances: []netctl.Instance{{PID: 9, Started: started}}},
			"web   daemon  yes      running   yes    -     0         -          -       9    2026-03-04 05:05:07"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		writeTable(&b, []netctl.Service{tt.svc, {Name: "other", Class: "daemon", State: "disabled", NextStart: &next}}, now)
		lines := strings.Split(b.String(), "\n")
		if len(lines) < 3 || !strings.HasPrefix(lines[0], "NAME ") || !strings.Contains(lines[0], "  READY  ") || !strings.Contains(lines[0], "  LAST EXIT  ") {
			t.Fatalf("%s: got\n%s\nwant a header with READY and LAST EXIT", tt.name, b.String())
		}
		if got := strings.Join(strings.Fields(lines[1]), " "); got != strings.Join(strings.Fields(tt.want), " ") {
			t.Errorf("%s: got\n%s\nwant\n%s", tt.name, lines[1], tt.want)
		}
		if col := strings.Index(lines[0], "READY"); !strings.HasPrefix(lines[1][col:], "yes") && !strings.HasPrefix(lines[1][col:], "no") {
			t.Errorf("%s: READY not under its header:\n%s", tt.name, b.String())
		}
	}
}

func TestShortExit(t *testing.T) {
	for _, tt := range []struct {
		e    *netctl.LastExit
		want string
	}{
		{nil, "-"},
		{&netctl.LastExit{Status: "exit status 0"}, "exit 0"},
		{&netctl.LastExit{Status: "exit status 3", Code: 3}, "exit 3"},
		{&netctl.LastExit{Status: "signal 9 (killed)", Code: 137}, "signal 9"},
		{&netctl.LastExit{Status: "signal 15", Code: 143}, "signal 15"},
	} {
		if got := shortExit(tt.e); got != tt.want {
			t.Errorf("%+v: got %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestWriteStatus(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.Local)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	tests := []struct {
		name string
		svc  netctl.Service
		want string
	}{
		{"every detail", netctl.Service{
			Name: "web", Class: "daemon", Enabled: true, State: "ready", Reason: "READY=1", Since: at(-5 * time.Minute), Ready: yes,
			Instances:    []netctl.Instance{{PID: 812, Started: now.Add(-5 * time.Minute)}},
			NotifyStatus: "serving 3 clients",
			Health:       "healthy", HealthError: "connect: connection refused", CheckFails: 1,
			LastExit:     &netctl.LastExit{Status: "exit status 3", Code: 3, At: now.Add(-6 * time.Minute), Ran: 0.002, Outcome: "crashed"},
			LastStop:     &netctl.LastStop{At: now.Add(-7 * time.Minute), Took: 10.004, Killed: true},
			ReadyTimeout: 90, StopTimeout: 10, Restarts: 3, Crashes: 0, Unhealthy: 2, Starts: 5, Exits: 4,
		}, "" +
			"web  ready (READY=1) for 5m0s\n" +
			"  daemon, enabled, ready\n" +
			"  pid 812, started 2026-03-04 05:01:07 (5m0s ago)\n" +
			"  notify status: serving 3 clients\n" +
			"  health: healthy: 1 failed check in a row, last: connect: connection refused\n" +
			"  last exit: exit status 3 at 2026-03-04 05:00:07, after 2ms (crashed)\n" +
			"  last stop: killed after 10s at 2026-03-04 04:59:07\n" +
			"  timeouts: ready 1m30s, stop 10s\n" +
			"  restarts 3, crashes in a row 0, unhealthy 2, started 5, ended 4\n"},
		{"unhealthy, stopped in time", netctl.Service{
			Name: "api", Class: "daemon", Enabled: true, State: "stopping", Ready: no,
			Health: "unhealthy", HealthError: "HTTP 500", CheckFails: 3,
			LastStop: &netctl.LastStop{At: now, Took: 0.1204},
		}, "" +
			"api  stopping\n" +
			"  daemon, enabled, not ready\n" +
			"  health: unhealthy: 3 failed checks in a row, last: HTTP 500\n" +
			"  last stop: stopped in 120ms at 2026-03-04 05:06:07\n" +
			"  restarts 0, crashes in a row 0, started 0, ended 0\n"},
		{"a stream with refusals", netctl.Service{
			Name: "echo", Class: "stream", Enabled: true, State: "idle", Ready: yes, Port: 7007,
			Refused: &netctl.Refused{PerSource: 4, OnlyFrom: 12}, Health: "unknown",
		}, "" +
			"echo  idle\n" +
			"  stream, enabled, ready, port 7007\n" +
			"  health: unknown\n" +
			"  refused: per_source 4, rate 0, only_from 12\n" +
			"  restarts 0, crashes in a row 0, started 0, ended 0\n"},
		{"a stream that refused nothing", netctl.Service{
			Name: "echo", Class: "stream", Enabled: false, State: "disabled", Reason: "disabled", Ready: no, Port: 7007, Refused: &netctl.Refused{},
		}, "" +
			"echo  disabled\n" +
			"  stream, disabled, not ready, port 7007\n" +
			"  restarts 0, crashes in a row 0, started 0, ended 0\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		writeStatus(&b, []netctl.Service{tt.svc}, now)
		if b.String() != tt.want {
			t.Errorf("%s: got\n%s\nwant\n%s", tt.name, b.String(), tt.want)
		}
	}
}

func TestTookText(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{1500 * time.Microsecond, "1ms"},
		{120400 * time.Microsecond, "120ms"},
		{2004 * time.Millisecond, "2s"},
		{2090 * time.Millisecond, "2s"}, // cut, not rounded: a 2s timeout says 2s
		{2300 * time.Millisecond, "2.3s"},
		{90*time.Second + 700*time.Millisecond, "1m30s"},
	} {
		if got := tookText(tt.d); got != tt.want {
			t.Errorf("%v: got %q, want %q", tt.d, got, tt.want)
		}
	}
}

// TestJSONCarriesLifecycle: list --json carries the new fields under the
// names of docs/protocol.md, and leaves out those a service does not have.
func TestJSONCarriesLifecycle(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var out bytes.Buffer
	p := &printer{prog: "metac", cmd: "list", json: true, stdout: &out, stderr: &out}
	p.print([]netctl.Answer{{Host: "h", Reply: &netctl.Reply{OK: true, Services: []netctl.Service{
		{Name: "web", Class: "daemon", Ready: yes, NotifyStatus: "up", ReadyTimeout: 90, StopTimeout: 2.5,
			LastStop: &netctl.LastStop{At: at, Took: 2.01, Killed: true}, Health: "unhealthy", HealthError: "HTTP 500", CheckFails: 3, Unhealthy: 1},
		{Name: "echo", Class: "stream", Ready: no, Port: 7, Refused: &netctl.Refused{PerSource: 1, Rate: 2, OnlyFrom: 3}},
	}}}})
	var got struct{ Services []map[string]any }
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("got %q: %v", out.String(), err)
	}
	web, echo := got.Services[0], got.Services[1]
	for k, want := range map[string]any{"ready": true, "notify_status": "up", "ready_timeout_seconds": 90.0, "stop_timeout_seconds": 2.5,
		"health": "unhealthy", "health_error": "HTTP 500", "check_fails": 3.0, "unhealthy": 1.0} {
		if web[k] != want {
			t.Errorf("web %s: got %v, want %v", k, web[k], want)
		}
	}
	if ls, _ := web["last_stop"].(map[string]any); ls["at"] != "2026-03-04T05:06:07Z" || ls["took_seconds"] != 2.01 || ls["killed"] != true {
		t.Errorf("web last_stop: got %v", web["last_stop"])
	}
	if _, ok := web["refused"]; ok {
		t.Errorf("web: got refused for a daemon: %v", web)
	}
	if r, _ := echo["refused"].(map[string]any); echo["ready"] != false || r["per_source"] != 1.0 || r["rate"] != 2.0 || r["only_from"] != 3.0 {
		t.Errorf("echo: got %v, want ready false and the refusals", echo)
	}
	for _, k := range []string{"notify_status", "health", "health_error", "check_fails", "unhealthy", "last_stop"} {
		if _, ok := echo[k]; ok {
			t.Errorf("echo: got %s, want it left out: %v", k, echo)
		}
	}
}
