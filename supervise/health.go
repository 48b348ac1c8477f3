package supervise

import (
	"strconv"
	"syscall"
	"time"

	"metad/conffmt"
)

// Health and hang detection (SPEC §10). A ready instance is checked every
// check_every by a helper goroutine that runs the probe and reports each
// result; with ready=notify and watchdog=, it must send WATCHDOG=1 within
// every watchdog period; with watch_output and quiet=, it must write a
// line within every quiet period. The service goroutine alone counts and
// decides: an instance that fails check_fails checks in a row, whose
// watchdog expires or that stays quiet is logged with the reason, stopped
// (SIGABRT for the watchdog, as systemd does; its stop signal otherwise)
// and its run counted as a crash, so that the backoff, retries= and
// on_failure= apply.

// health is an instance's health checking.
type health struct {
	checker  *helper   // runs the check; nil if none
	fails    int       // failed checks in a row
	checked  bool      // a check has ended
	watchdog time.Time // WATCHDOG=1 due by then; zero: no watchdog
}

// startHealth starts what watches a ready instance.
func (sv *service) startHealth(inst *instance, now time.Time) {
	c := &sv.conf
	if c.Check.Kind != conffmt.ProbeNone && inst.health.checker == nil {
		pid := inst.pid
		inst.health.checker = sv.probeEvery(c.Check, c.CheckEvery, c.CheckEvery, c.CheckTimeout, func(err error) bool {
			sv.events.put(event{kind: evHealth, pid: pid, err: err})
			return true
		})
	}
	if c.Watchdog > 0 && c.Ready.Kind == conffmt.ReadyNotify && inst.health.watchdog.IsZero() {
		inst.health.watchdog = now.Add(c.Watchdog)
	}
}

// stopHealth stops the checks of an instance that ended.
func (sv *service) stopHealth(inst *instance) {
	inst.health.checker.cancel()
	inst.health.checker = nil
}

// healthEvent counts one check's result.
func (sv *service) healthEvent(ev event, now time.Time) {
	inst := sv.instances[ev.pid]
	if inst == nil || inst.asked {
		return
	}
	h := &inst.health
	h.checked = true
	if ev.err == nil {
		if h.fails > 0 {
			sv.log.Info().Int("pid", inst.pid).Int("after", h.fails).Msg("healthy again")
		}
		h.fails = 0
		return
	}
	h.fails++
	sv.healthErr = ev.err.Error()
	sv.log.Warn().Int("pid", inst.pid).Err(ev.err).Int("fails", h.fails).Int("check_fails", sv.conf.CheckFails).Msg("check failed")
	if h.fails >= sv.conf.CheckFails {
		sv.unwell(inst, now, "unhealthy: "+strconv.Itoa(h.fails)+" checks failed in a row, the last: "+ev.err.Error(), sv.conf.Stop)
	}
}

// watchdogKick records a WATCHDOG=1 of inst; trigger (WATCHDOG=trigger)
// makes it expire now.
func (sv *service) watchdogKick(inst *instance, now time.Time, trigger bool) {
	if sv.conf.Watchdog <= 0 || inst.health.watchdog.IsZero() {
		return
	}
	if trigger {
		sv.unwell(inst, now, "the program asked for its watchdog to fire (WATCHDOG=trigger)", syscall.SIGABRT)
		return
	}
	inst.health.watchdog = now.Add(sv.conf.Watchdog)
}

// unwell stops an instance found unhealthy, hung or watchdog-expired:
// its run counts as a crash.
func (sv *service) unwell(inst *instance, now time.Time, why string, sig syscall.Signal) {
	if inst.asked {
		return
	}
	inst.unhealthy = why
	sv.unhealthy++
	sv.healthErr = why
	sv.log.Warn().Int("pid", inst.pid).Str("reason", why).Stringer("signal", sig).Msg("unhealthy: stopping it")
	sv.stopHealth(inst)
	sv.stopInstance(inst, now, sig)
}

// healthTick stops the instances whose watchdog expired or that stayed
// quiet for too long.
func (sv *service) healthTick(now time.Time) {
	for _, inst := range sv.instances {
		if inst.asked {
			continue
		}
		if w := inst.health.watchdog; !w.IsZero() && !now.Before(w) {
			sv.unwell(inst, now, "watchdog expired: no WATCHDOG=1 in "+sv.conf.Watchdog.String(), syscall.SIGABRT)
			continue
		}
		if q := sv.quietUntil(inst); !q.IsZero() && !now.Before(q) {
			sv.unwell(inst, now, "hung: no output line in "+sv.conf.Quiet.String(), sv.conf.Stop)
		}
	}
}

// quietUntil is when inst counts as hung unless it writes a line: quiet=
// after its last line, or after its start; zero without quiet=.
func (sv *service) quietUntil(inst *instance) time.Time {
	if sv.conf.Quiet <= 0 || !sv.conf.Watch {
		return time.Time{}
	}
	last := inst.started
	for _, rd := range sv.readers {
		if rd.pid != inst.pid {
			continue
		}
		if ns := rd.seen.Load(); ns > 0 {
			if t := time.Unix(0, ns); t.After(last) {
				last = t
			}
		}
	}
	return last.Add(sv.conf.Quiet)
}

// healthDeadline is the earliest watchdog or quiet deadline.
func (sv *service) healthDeadline() time.Time {
	var t time.Time
	for _, inst := range sv.instances {
		if inst.asked {
			continue
		}
		t = earliest(t, inst.health.watchdog)
		t = earliest(t, sv.quietUntil(inst))
	}
	return t
}

// healthStatus adds health to a snapshot.
func (sv *service) healthStatus(st *Status) {
	st.Unhealthy, st.HealthError = sv.unhealthy, sv.healthErr
	if sv.conf.Check.Kind == conffmt.ProbeNone && sv.conf.Watchdog <= 0 && sv.conf.Quiet <= 0 {
		return
	}
	st.Health = "unknown"
	checked, fails := false, 0
	for _, inst := range sv.instances {
		if inst.unhealthy != "" {
			st.Health = "unhealthy"
			return
		}
		checked = checked || inst.health.checked || inst.ready && sv.conf.Check.Kind == conffmt.ProbeNone
		fails = max(fails, inst.health.fails)
	}
	st.CheckFails = fails
	if checked {
		st.Health = "healthy"
	}
}
