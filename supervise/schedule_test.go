package supervise

import (
	"testing"
	"time"

	"metad/conffmt"
)

func TestNext(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	daemon := func(live, min, max int) plan {
		return plan{class: conffmt.Daemon, active: true, live: live, min: min, max: max}
	}
	withPeriod := func(p plan, period time.Duration, next time.Time) plan {
		p.period, p.nextPeriod = period, next
		return p
	}
	held := func(p plan, until time.Time) plan { p.hold = until; return p }
	tests := []struct {
		name   string
		p      plan
		wantAt time.Time
		want   reason
	}{
		{"inactive", plan{class: conffmt.Daemon, min: 1, max: 1}, time.Time{}, noStart},
		{"below min", daemon(0, 1, 1), t0, forMin},
		{"at min", daemon(1, 1, 1), time.Time{}, noStart},
		{"below min in backoff", held(daemon(0, 1, 1), sec(4)), sec(4), forMin},
		{"backoff passed", held(daemon(0, 1, 1), sec(-4)), t0, forMin},
		// Defect 5: min=1 period=1h, the first run crashed: the next start
		// is the backoff's, not the period's.
		{"min=1 period=1h crashed", withPeriod(held(daemon(0, 1, 1), sec(1)), time.Hour, sec(3600)), sec(1), forMin},
		{"period below max", withPeriod(daemon(1, 1, 3), time.Minute, sec(60)), sec(60), forPeriod},
		{"period at max", withPeriod(daemon(3, 1, 3), time.Minute, sec(60)), time.Time{}, noStart},
		{"period in backoff", withPeriod(held(daemon(1, 1, 3), sec(90)), time.Minute, sec(60)), sec(90), forPeriod},
		{"period due", withPeriod(daemon(0, 0, 1), time.Hour, sec(-1)), t0, forPeriod},
		{"leftovers in custody", plan{class: conffmt.Daemon, active: true, min: 1, max: 1, custody: true}, time.Time{}, noStart},
		{"listener closed", plan{class: conffmt.Listener, active: true, max: 1}, t0, forListen},
		{"listener socket retry", plan{class: conffmt.Listener, active: true, max: 1, hold: sec(2)}, sec(2), forListen},
		{"listener waits", plan{class: conffmt.Listener, active: true, max: 1, open: true}, time.Time{}, noStart},
		{"listener connection", plan{class: conffmt.Listener, active: true, max: 1, open: true, waiting: true, hold: sec(8)}, sec(8), forConn},
		{"listener min=1", plan{class: conffmt.Listener, active: true, min: 1, max: 1, open: true}, t0, forConn},
		{"listener running", plan{class: conffmt.Listener, active: true, min: 1, max: 1, open: true, live: 1}, time.Time{}, noStart},
		{"stream closed", plan{class: conffmt.Stream, active: true, max: 5, hold: sec(3)}, sec(3), forListen},
		{"stream open", plan{class: conffmt.Stream, active: true, max: 5, open: true}, time.Time{}, noStart},
	}
	for _, tt := range tests {
		at, why := next(tt.p, t0)
		if !at.Equal(tt.wantAt) || why != tt.want {
			t.Errorf("%s: got %v %q, want %v %q", tt.name, at.Sub(t0), why, tt.wantAt.Sub(t0), tt.want)
		}
	}
}
