package metac

import (
	"testing"
	"time"

	"metad/netctl"
)

// svc builds a status for the wait tests: a daemon named web with the
// given state, readiness, counters and instances.
type svc struct {
	state         string
	ready         *bool
	starts, exits int
	pids          []int
	custody       []int
	last          *netctl.LastExit
	stop          *netctl.LastStop
	next          time.Duration // next start from the look's time; 0: none
	startErr      time.Duration // a start error at this offset from t0; 0: none
	class         string
	port          int
	reason        string
}

// t0 is the time of every look in these tests.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func (s svc) status() netctl.Service {
	out := netctl.Service{Name: "web", Class: "daemon", Enabled: true, State: s.state, Ready: s.ready, Reason: s.reason,
		Starts: s.starts, Exits: s.exits, Custody: s.custody, LastExit: s.last, LastStop: s.stop, Port: s.port, ReadyTimeout: 3, StopTimeout: 2}
	if s.class != "" {
		out.Class = s.class
	}
	for i, p := range s.pids {
		out.Instances = append(out.Instances, netctl.Instance{PID: p, Started: t0.Add(time.Duration(i) * time.Second)})
	}
	if s.next != 0 {
		n := t0.Add(s.next)
		out.NextStart = &n
	}
	if s.startErr != 0 {
		at := t0.Add(s.startErr)
		out.StartErrorAt, out.StartError = &at, "cannot start \"/srv/web\": permission denied"
	}
	return out
}

var (
	exit0    = &netctl.LastExit{Status: "exit status 0", Outcome: "clean"}
	exit3    = &netctl.LastExit{Status: "exit status 3", Code: 3, Outcome: "crashed"}
	stopped  = &netctl.LastStop{At: t0.Add(-time.Hour), Took: 0.1}
	killed2s = &netctl.LastStop{At: t0, Took: 2.013, Killed: true}
)

// TestWatch feeds a watch the statuses of successive looks: every look but
// the last must leave the outcome open, the last must give want.
func TestWatch(t *testing.T) {
	tests := []struct {
		name   string
		act    action
		before svc
		looks  []svc
		want   outcome
	}{
		// start
		{"start: ready once confirmed", actStart, svc{state: "idle", ready: no},
			[]svc{{state: "starting", ready: no, starts: 1, pids: []int{812}}, {state: "ready", ready: yes, starts: 1, pids: []int{812}}, {state: "ready", ready: yes, starts: 1, pids: []int{812}}},
			outcome{true, "ready (pid 812)"}},
		{"start: exits 3 at once, seen ready for a moment", actStart, svc{state: "idle", ready: no},
			[]svc{{state: "ready", ready: yes, starts: 1, pids: []int{812}}, {state: "backoff", ready: no, starts: 1, exits: 1, last: exit3, next: 2 * time.Second}},
			outcome{false, "not ready: exit status 3, next start in 2s"}},
		{"start: exits 3, then failed for good", actStart, svc{state: "idle", ready: no, starts: 4, exits: 4},
			[]svc{{state: "failed", ready: no, starts: 5, exits: 5, last: exit3}},
			outcome{false, "failed: exit status 3"}},
		{"start: a one-shot is done", actStart, svc{state: "done", ready: no, starts: 1, exits: 1, last: exit0},
			[]svc{{state: "starting", ready: no, starts: 2, pids: []int{9}}, {state: "done", ready: no, starts: 2, exits: 2, last: exit0}},
			outcome{true, "done (exit status 0)"}},
		{"start: the old done does not count", actStart, svc{state: "done", ready: no, starts: 1, exits: 1, last: exit0},
			[]svc{{state: "done", ready: no, starts: 1, exits: 1, last: exit0}, {state: "done", ready: no, starts: 2, exits: 2, last: exit0}},
			outcome{true, "done (exit status 0)"}},
		{"start: a min=0 job ran and ended", actStart, svc{state: "idle", ready: no},
			[]svc{{state: "idle", ready: no, starts: 1, exits: 1, last: exit0}},
			outcome{true, "ended (exit status 0)"}},
		{"start: still starting", actStart, svc{state: "idle", ready: no},
			[]svc{{state: "starting", ready: no, starts: 1, pids: []int{5}}, {state: "starting", ready: no, starts: 1, pids: []int{5}}},
			outcome{}},
		{"start: a crash after the moment ready is a new look", actStart, svc{state: "idle", ready: no},
			[]svc{{state: "ready", ready: yes, starts: 1, pids: []int{5}}, {state: "ready", ready: yes, starts: 2, exits: 1, pids: []int{6}, last: exit0},
				{state: "ready", ready: yes, starts: 2, exits: 1, pids: []int{6}, last: exit0}},
			outcome{true, "ready (pid 6)"}},
		{"start: the next start fails", actStart, svc{state: "idle", ready: no, startErr: -time.Hour},
			[]svc{{state: "backoff", ready: no, startErr: -time.Millisecond, next: 900 * time.Millisecond}},
			outcome{false, "not ready: cannot start \"/srv/web\": permission denied, next start in 900ms"}},
		{"start: an old start error is not this one", actStart, svc{state: "backoff", ready: no, startErr: -time.Hour},
			[]svc{{state: "starting", ready: no, starts: 1, pids: []int{5}, startErr: -time.Hour}},
			outcome{}},
		{"start: a listener", actStart, svc{class: "listener", state: "idle", ready: yes, port: 80},
			[]svc{{class: "listener", state: "ready", ready: yes, port: 80, starts: 1, pids: []int{7}}, {class: "listener", state: "ready", ready: yes, port: 80, starts: 1, pids: []int{7}}},
			outcome{true, "ready (pid 7, listening on port 80)"}},
		{"start: another instance of two", actStart, svc{state: "ready", ready: yes, starts: 1, pids: []int{5}},
			[]svc{{state: "ready", ready: yes, starts: 2, pids: []int{5, 6}}, {state: "ready", ready: yes, starts: 2, pids: []int{5, 6}}},
			outcome{true, "ready (pid 6)"}},
		{"start: a disabled service runs its instance", actStart, svc{state: "disabled", ready: no},
			[]svc{{state: "disabled", ready: no, starts: 1, pids: []int{9}}, {state: "disabled", ready: no, starts: 1, pids: []int{9}}},
			outcome{true, "started (pid 9, disabled)"}},
		{"start: a disabled service that exits at once", actStart, svc{state: "disabled", ready: no},
			[]svc{{state: "disabled", ready: no, starts: 1, pids: []int{9}}, {state: "disabled", ready: no, starts: 1, exits: 1, last: exit3}},
			outcome{false, "not ready: exit status 3"}},
		{"start: an old metad, ready from the state", actStart, svc{state: "idle"},
			[]svc{{state: "running", starts: 1, pids: []int{5}}, {state: "running", starts: 1, pids: []int{5}}},
			outcome{true, "ready (pid 5)"}},

		// restart
		{"restart: waits for the old instance", actRestart, svc{state: "ready", ready: yes, starts: 1, pids: []int{5}},
			[]svc{{state: "stopping", ready: no, starts: 1, pids: []int{5}}, {state: "ready", ready: yes, starts: 1, pids: []int{5}}},
			outcome{}},
		{"restart: new instance ready", actRestart, svc{state: "ready", ready: yes, starts: 1, pids: []int{5}},
			[]svc{{state: "starting", ready: no, starts: 2, exits: 1, pids: []int{6}, last: exit0}, {state: "ready", ready: yes, starts: 2, exits: 1, pids: []int{6}, last: exit0},
				{state: "ready", ready: yes, starts: 2, exits: 1, pids: []int{6}, last: exit0}},
			outcome{true, "ready (pid 6)"}},
		{"restart: the old one's end is not a failure, the new one's is", actRestart, svc{state: "ready", ready: yes, starts: 1, pids: []int{5}},
			[]svc{{state: "ready", ready: yes, starts: 2, exits: 1, pids: []int{6}, last: exit0}, {state: "backoff", ready: no, starts: 2, exits: 2, last: exit3, next: time.Second}},
			outcome{false, "not ready: exit status 3, next start in 1s"}},
		{"restart: disabled, nothing starts", actRestart, svc{state: "disabled", ready: yes, starts: 1, pids: []int{5}},
			[]svc{{state: "disabled", ready: no, starts: 1, exits: 1, last: exit0}},
			outcome{true, "stopped (disabled)"}},
		{"restart: idle until its period", actRestart, svc{state: "ready", ready: yes, starts: 1, pids: []int{5}},
			[]svc{{state: "idle", ready: no, starts: 1, exits: 1, last: exit0, next: time.Hour}},
			outcome{true, "stopped (idle, next start in 1h0m0s)"}},
		{"restart: a stream", actRestart, svc{class: "stream", state: "idle", ready: yes, port: 7, starts: 9, exits: 7, pids: []int{20, 21}},
			[]svc{{class: "stream", state: "idle", ready: yes, port: 7, starts: 10, exits: 10, pids: []int{22}, last: exit3}, {class: "stream", state: "idle", ready: yes, port: 7, starts: 10, exits: 10, pids: []int{22}, last: exit3}},
			outcome{true, "ready (listening on port 7)"}},
		{"restart: failed stays failed", actRestart, svc{state: "failed", ready: no, starts: 3, exits: 3, last: exit3},
			[]svc{{state: "failed", ready: no, starts: 3, exits: 3, last: exit3}},
			outcome{false, "failed: exit status 3"}},

		// stop
		{"stop: on the stop signal", actStop, svc{state: "ready", ready: yes, pids: []int{5}, stop: stopped},
			[]svc{{state: "stopping", pids: []int{5}, stop: stopped}, {state: "disabled", stop: &netctl.LastStop{At: t0, Took: 0.05}}},
			outcome{true, "stopped"}},
		{"stop: killed", actStop, svc{state: "ready", ready: yes, pids: []int{5}},
			[]svc{{state: "stopping", pids: []int{5}}, {state: "disabled", stop: killed2s}},
			outcome{true, "killed after 2s"}},
		{"stop: an old kill does not count", actStop, svc{state: "ready", ready: yes, pids: []int{5}, stop: killed2s},
			[]svc{{state: "disabled", stop: killed2s}},
			outcome{true, "stopped"}},
		{"stop: custody left", actStop, svc{state: "ready", ready: yes, pids: []int{5}},
			[]svc{{state: "disabled", custody: []int{40}}},
			outcome{}},
		{"stop: nothing ran", actStop, svc{state: "disabled", ready: no},
			[]svc{{state: "disabled"}},
			outcome{true, "stopped (was not running)"}},
		{"stop: an old metad", actStop, svc{state: "running", pids: []int{5}},
			[]svc{{state: "disabled", pids: []int{5}}, {state: "disabled", exits: 1, last: exit0}},
			outcome{true, "stopped"}},

		// wait
		{"wait: ready already", actWait, svc{state: "ready", ready: yes, starts: 1, pids: []int{5}},
			[]svc{{state: "ready", ready: yes, starts: 1, pids: []int{5}}, {state: "ready", ready: yes, starts: 1, pids: []int{5}}},
			outcome{true, "ready (pid 5)"}},
		{"wait: through a backoff", actWait, svc{state: "backoff", ready: no, exits: 1, last: exit3},
			[]svc{{state: "backoff", ready: no, exits: 1, last: exit3}, {state: "starting", starts: 1, exits: 1, pids: []int{6}}, {state: "ready", ready: yes, starts: 1, exits: 1, pids: []int{6}},
				{state: "ready", ready: yes, starts: 1, exits: 1, pids: []int{6}}},
			outcome{true, "ready (pid 6)"}},
		{"wait: failed", actWait, svc{state: "backoff", ready: no},
			[]svc{{state: "failed", ready: no, exits: 3, last: exit3}},
			outcome{false, "failed: exit status 3"}},
		{"wait: done", actWait, svc{state: "starting", ready: no},
			[]svc{{state: "done", ready: no, exits: 1, last: exit0}},
			outcome{true, "done (exit status 0)"}},
	}
	for _, tt := range tests {
		w := &watch{act: tt.act, before: tt.before.status()}
		var got outcome
		done := false
		for i, l := range tt.looks {
			got, done = w.look(l.status(), t0)
			if done && i < len(tt.looks)-1 {
				t.Errorf("%s: look %d: got %+v, want the outcome open", tt.name, i, got)
				break
			}
		}
		if want := tt.want != (outcome{}); done != want || got != tt.want {
			t.Errorf("%s: got %+v (known %v), want %+v (known %v)", tt.name, got, done, tt.want, want)
		}
	}
}

func TestWatchExpired(t *testing.T) {
	last := svc{state: "starting", ready: no, reason: "waiting for READY=1", starts: 1, pids: []int{5}}.status()
	tests := []struct {
		name string
		act  action
		last *netctl.Service
		want string
	}{
		{"no status at all", actStart, nil, "no status within 8s"},
		{"not ready", actStart, &last, "not ready within 8s: starting (waiting for READY=1)"},
		{"still stopping", actStop, &last, "still stopping after 8s: starting (waiting for READY=1)"},
		{"old instances left", actRestart, &last, "old instances still stopping after 8s: starting (waiting for READY=1)"},
		{"wait", actWait, &last, "not ready within 8s: starting (waiting for READY=1)"},
	}
	for _, tt := range tests {
		w := &watch{act: tt.act, before: svc{state: "ready", ready: yes, pids: []int{5}}.status()}
		if got := w.expired(tt.last, 8*time.Second); got.ok || got.text != tt.want {
			t.Errorf("%s: got %+v, want a failure %q", tt.name, got, tt.want)
		}
	}
}

func TestWatchBound(t *testing.T) {
	tests := []struct {
		act         action
		ready, stop float64
		want        time.Duration
	}{
		{actStart, 3, 2, 8 * time.Second},
		{actWait, 3, 2, 8 * time.Second},
		{actStop, 3, 2, 9 * time.Second},
		{actRestart, 3, 2, 12 * time.Second},
		{actStart, 0, 0, defaultReadyTimeout + waitMargin}, // a metad that does not say
		{actStop, 0, 0, 2*defaultStopTimeout + waitMargin},
	}
	for _, tt := range tests {
		w := &watch{act: tt.act, before: netctl.Service{ReadyTimeout: tt.ready, StopTimeout: tt.stop}}
		if got := w.bound(); got != tt.want {
			t.Errorf("%v ready %v stop %v: got %v, want %v", tt.act, tt.ready, tt.stop, got, tt.want)
		}
	}
}
