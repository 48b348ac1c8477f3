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
	switch {
	case sv.conf.Class == conffmt.Daemon && sv.conf.Restart == conffmt.RestartNever && failed:
		sv.end = verdict{endFailed, "ended (" + status + ") and restart=never", code}
	case sv.conf.Class == conffmt.Daemon && sv.conf.Restart != conffmt.RestartAlways && !failed:
		sv.end = verdict{endDone, "ended (" + status + ")", code}
	case sv.conf.Retries > 0 && sv.backoff.crashes >= sv.conf.Retries:
		sv.end = verdict{endFailed, strconv.Itoa(sv.backoff.crashes) + " crashes in a row (retries=" + strconv.Itoa(sv.conf.Retries) + "), the last " + status, code}
	default:
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
