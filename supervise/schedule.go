package supervise

import (
	"time"

	"metad/conffmt"
)

// reason says why an automatic start is scheduled.
type reason uint8

const (
	noStart   reason = iota // nothing is scheduled
	forMin                  // fewer than min instances run
	forPeriod               // the period has come round
	forConn                 // listener: a connection waits
	forListen               // listener, stream: the socket is to be opened
)

func (r reason) String() string {
	switch r {
	case noStart:
		return ""
	case forMin:
		return "min"
	case forPeriod:
		return "period"
	case forConn:
		return "connection"
	case forListen:
		return "listen"
	default:
		return "reason(?)"
	}
}

// plan is everything the schedule of a service depends on, copied out of
// the service so that next is a pure function of it.
type plan struct {
	class      conffmt.Class
	active     bool // enabled and not quitting
	live       int  // instances, and pidfile daemons still to be found
	min, max   int
	period     time.Duration
	nextPeriod time.Time // daemon with a period: when the next one is due
	hold       time.Time // backoff: no automatic start before this
	custody    bool      // leftovers of an ended instance are still being stopped
	open       bool      // listener, stream: the socket is open
	waiting    bool      // listener: a connection waits for a program
	wait       bool      // a dependency is not ready: automatic starts wait
}

// next returns the next automatic start of a service and why, or
// noStart. It is never before now: now means due now. The timer is armed from
// it and status shows it, so that the two cannot disagree.
//
// Rules: nothing starts while inactive, while a dependency is not ready,
// or while leftovers are in custody (daemon, listener); a closed socket is opened after the backoff; a
// daemon starts one whenever fewer than min run and one every period
// while fewer than max run, after the backoff; a listener starts its
// program when a connection waits or min=1, after the backoff; a stream
// starts instances on connections only, which the schedule does not see.
func next(p plan, now time.Time) (time.Time, reason) {
	if !p.active || p.custody || p.wait {
		return time.Time{}, noStart
	}
	switch p.class {
	case conffmt.Daemon:
		at, why := time.Time{}, noStart
		if p.live < p.min {
			at, why = later(p.hold, now), forMin
		}
		if p.period > 0 && p.live < p.max {
			t := later(later(p.nextPeriod, p.hold), now)
			if why == noStart || t.Before(at) {
				at, why = t, forPeriod
			}
		}
		return at, why
	case conffmt.Listener:
		switch {
		case !p.open:
			return later(p.hold, now), forListen
		case p.live == 0 && (p.min > 0 || p.waiting):
			return later(p.hold, now), forConn
		}
	case conffmt.Stream:
		if !p.open {
			return later(p.hold, now), forListen
		}
	}
	return time.Time{}, noStart
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}

// earliest returns the earlier of two deadlines, the zero time meaning
// none.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	default:
		return b
	}
}
