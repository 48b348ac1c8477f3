package supervise

import (
	"strconv"

	"metad/conffmt"
)

// A service's end for good (SPEC §8): restart=, retries=, and what metad
// is told of it for on_failure= and on_success=.

// endKind says how a service ended for good by its own rules.
type endKind uint8

const (
	endNone endKind = iota
	endDone
	endFailed
)

// verdict is a service's end for good: restart policy or retries.
type verdict struct {
	kind   endKind
	reason string
	code   int // the last exit status, as a shell reports it
}

func (e verdict) state() state {
	if e.kind == endFailed {
		return stateFailed
	}
	return stateDone
}

// policy applies restart=, retries= after an instance of a daemon or
// listener ended that metad did not ask to stop.
func (sv *service) policy(end ending) {
	if end.asked || sv.quitting || sv.end.kind != endNone {
		return
	}
	failed := end.outcome != Clean
	code := end.exit.Code()
	if s, ok := end.exit.Signaled(); ok {
		code = 128 + int(s)
	}
	status := end.exit.String()
	if end.exit.PID == 0 {
		status = "its daemon was not found"
	}
	sv.end = verdictOf(&sv.conf, sv.backoff.crashes, failed, status, code)
	if sv.end.kind == endNone {
		return
	}
	ev := sv.log.Info()
	if sv.end.kind == endFailed {
		ev = sv.log.Warn()
	}
	ev.Str("reason", sv.end.reason).Msg("ended for good")
}

// again clears an end for good: a manual start, enable or reload tries
// the service again.
func (sv *service) again() {
	if sv.end.kind != endNone {
		sv.end = verdict{}
		sv.backoff.reset()
	}
}

// ended reports the service's end for good to metad, once, as the state
// becomes done or failed.
func (sv *service) reportEnd() {
	if f := sv.sup.cfg.Ended; f != nil {
		a := sv.conf.OnSuccess
		if sv.end.kind == endFailed {
			a = sv.conf.OnFailure
		}
		f(End{Service: sv.conf.Name, Failed: sv.end.kind == endFailed, Code: sv.end.code, Action: a, Reason: sv.end.reason})
	}
}

// verdictOf is the restart policy of service c (SPEC §8): what the end of
// a run metad did not ask for makes of the service, given how it ended
// (failed, its status and exit code) and the crashes in a row counted
// with it. A daemon's restart=never ends it either way, on-failure after
// a clean end; retries= ends any service after that many crashes in a
// row.
func verdictOf(c *conffmt.Service, crashes int, failed bool, status string, code int) verdict {
	daemon := c.Class == conffmt.Daemon
	switch {
	case daemon && c.Restart == conffmt.RestartNever && failed:
		return verdict{endFailed, "ended (" + status + ") and restart=never", code}
	case daemon && c.Restart != conffmt.RestartAlways && !failed:
		return verdict{endDone, "ended (" + status + ")", code}
	case c.Retries > 0 && crashes >= c.Retries:
		return verdict{endFailed, strconv.Itoa(crashes) + " crashes in a row (retries=" + strconv.Itoa(c.Retries) + "), the last " + status, code}
	}
	return verdict{}
}
