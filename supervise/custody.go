package supervise

import (
	"errors"
	"slices"
	"syscall"
	"time"

	"metad/init"
)

// CustodySource finds the processes left behind by a service's ended
// instances (SPEC §9). The default reads sessions from /proc; a cgroup v2
// source can list every process of the service's cgroup instead, setsid
// callers included, and ignore sessions.
type CustodySource interface {
	// Members returns the live processes of service name in the given
	// sessions (each an ended instance's), in no particular order. With
	// quick, a session whose process group (same id) is empty may be
	// taken for empty without a full scan: for one check per stream
	// connection. It must be safe for concurrent use.
	Members(name string, sessions []int, quick bool) ([]int, error)
}

// procSessions is the default CustodySource.
type procSessions struct{}

func (procSessions) Members(_ string, sessions []int, quick bool) ([]int, error) {
	if quick {
		kept := sessions[:0:0]
		for _, sid := range sessions {
			if err := syscall.Kill(-sid, 0); !errors.Is(err, syscall.ESRCH) {
				kept = append(kept, sid)
			}
		}
		if sessions = kept; len(sessions) == 0 {
			return nil, nil
		}
	}
	found, err := initsys.Sessions("/proc", sessions)
	var pids []int
	for _, p := range found {
		pids = append(pids, p...)
	}
	return pids, err
}

// custodyRescan is how often custody looks again for leftovers that are
// not metad's children (whose exits metad is therefore not told of).
const custodyRescan = time.Second

// custody is what is left of a service's ended instances: the sessions
// of those instances while any process lives in them and, with a cgroup,
// the processes of the service's cgroup that are no instance's (strays:
// those that called setsid) once no instance runs, or at a stop.
// Leftovers get the stop signal at once, SIGKILL after the stop timeout;
// while any is left a daemon or listener starts nothing (state stopping).
// Owned by the service goroutine.
type custody struct {
	sv       *service
	sessions []int
	strays   bool      // the cgroup's strays are in custody
	sweepAt  time.Time // a stream's: when to look for strays; zero if not due
	members  []int     // the last scan's processes
	followed []int     // members metad follows with the reaper, until their exit comes
	killAt   time.Time // SIGKILL for whatever is left; zero when nothing is
	killed   bool
	rescanAt time.Time
}

func (c *custody) empty() bool { return len(c.sessions) == 0 && !c.strays }
func (c *custody) pids() []int { return slices.Clone(c.members) }
func (c *custody) source() CustodySource {
	return c.sv.sup.cfg.Custody
}

// add takes the session of an instance that has just ended into custody,
// if anything is left in it. A stream instance's session is checked
// quickly (its process group), one per connection. An adopted daemon is
// also looked for in a session of its own: it may have called setsid
// after metad read its pidfile.
func (c *custody) add(inst *instance, now time.Time) {
	sessions := []int{}
	if inst.sid > 0 {
		sessions = append(sessions, inst.sid)
	}
	if inst.adopted && inst.pid != inst.sid {
		sessions = append(sessions, inst.pid)
	}
	var pids []int
	if len(sessions) > 0 {
		var err error
		pids, err = c.source().Members(c.sv.conf.Name, sessions, inst.remote.valid())
		if err != nil {
			c.sv.log.Warn().Err(err).Msg("cannot look for leftovers")
		}
	}
	// With no other instance (nor a pidfile daemon still to be found)
	// running, whatever else is in the cgroup is the ended instance's.
	strays := c.sv.group != nil && c.sv.plan().live == 0
	if strays && inst.remote.valid() {
		// A stream's connections come and go: one look at the cgroup
		// per rescan period, not one per connection.
		if c.sweepAt.IsZero() {
			c.sweepAt = now.Add(custodyRescan)
		}
		strays = false
	}
	if strays {
		found := c.findStrays()
		pids = append(pids, found...)
		strays = len(found) > 0
	}
	if len(pids) == 0 {
		return
	}
	slices.Sort(pids)
	pids = slices.Compact(pids) // the session's are in the cgroup too
	c.strays = c.strays || strays
	c.sv.log.Info().Int("pid", inst.pid).Ints("leftovers", pids).Msg("stopping leftovers")
	for _, sid := range sessions {
		if !slices.Contains(c.sessions, sid) {
			c.sessions = append(c.sessions, sid)
		}
	}
	// Leftovers of an instance asked to stop had their grace with it
	// (the stop signal went to its process group): SIGKILL comes when
	// it was due for the instance, so a stop or shutdown stays within
	// one stop timeout.
	killAt := now.Add(c.sv.stopTimeout())
	if inst.asked && !inst.killAt.IsZero() && inst.killAt.Before(killAt) {
		killAt = inst.killAt
	}
	if c.killAt.IsZero() || killAt.Before(c.killAt) {
		c.killAt, c.killed = killAt, false
	}
	c.take(pids, now)
}

// take signals new members, follows those that are metad's children and
// arms SIGKILL.
func (c *custody) take(pids []int, now time.Time) {
	if c.killAt.IsZero() {
		c.killAt, c.killed = now.Add(c.sv.stopTimeout()), false
	}
	if !now.Before(c.killAt) {
		c.killed = true
	}
	sig := c.sv.conf.Stop
	if c.killed {
		sig = syscall.SIGKILL
	}
	for _, pid := range pids {
		if slices.Contains(c.members, pid) {
			continue
		}
		c.members = append(c.members, pid)
		// Orphans of the instance are metad's (the subreaper's)
		// children: their exits come through the reaper. Others are
		// found gone by a rescan.
		if c.sv.sup.cfg.Procs.Adopt(pid, c.sv.onExit) == nil {
			c.followed = append(c.followed, pid)
		}
		c.sv.kill(pid, sig)
	}
	c.rescanAt = now.Add(custodyRescan)
}

// rescan looks again at the sessions in custody and forgets them once
// empty.
func (c *custody) rescan(now time.Time) {
	if c.empty() {
		return
	}
	var pids []int
	if len(c.sessions) > 0 {
		var err error
		pids, err = c.source().Members(c.sv.conf.Name, c.sessions, false)
		if err != nil {
			c.sv.log.Warn().Err(err).Msg("cannot look for leftovers")
		}
	}
	if c.strays {
		pids = append(pids, c.findStrays()...)
	}
	if len(pids) == 0 {
		c.sv.log.Info().Ints("sessions", c.sessions).Bool("cgroup", c.strays).Msg("leftovers gone")
		*c = custody{sv: c.sv, followed: c.followed, sweepAt: c.sweepAt}
		return
	}
	c.members = slices.DeleteFunc(c.members, func(p int) bool { return !slices.Contains(pids, p) })
	c.take(pids, now)
}

// exited handles the exit of a process in custody; it reports whether
// pid was one.
func (c *custody) exited(pid int, now time.Time) bool {
	followed := slices.Contains(c.followed, pid)
	c.followed = slices.DeleteFunc(c.followed, func(p int) bool { return p == pid })
	if !slices.Contains(c.members, pid) {
		return followed // gone from a scan before its exit came
	}
	c.members = slices.DeleteFunc(c.members, func(p int) bool { return p == pid })
	c.rescan(now)
	return true
}

// stop hastens custody at a stop, restart or shutdown: whatever is left
// has had its stop signal; SIGKILL follows at the stop timeout. With a
// cgroup, every process in it that is not in an instance's process group
// (which the instance's stop signal reaches) joins custody: the cgroup is
// emptied.
func (c *custody) stop(now time.Time) {
	c.sweep(now)
	c.rescan(now)
}

// sweep takes the cgroup's strays into custody.
func (c *custody) sweep(now time.Time) {
	c.sweepAt = time.Time{}
	if c.sv.group == nil {
		return
	}
	if pids := c.findStrays(); len(pids) > 0 {
		c.strays = true
		c.sv.log.Info().Ints("leftovers", pids).Msg("stopping leftovers")
		c.take(pids, now)
	}
}

// findStrays returns the processes of the service's cgroup that belong to
// no live instance: neither an instance nor in an instance's process
// group (whose signals reach them, and whose session custody takes when
// it ends). Once strays are in custody while instances that were not
// asked to stop run (a stream's new connections), only the strays already
// known are kept: a new instance's setsid'd children are its own.
func (c *custody) findStrays() []int {
	sv := c.sv
	pids, err := sv.group.PIDs()
	if err != nil {
		sv.log.Warn().Err(err).Msg("cannot look for leftovers")
		return nil
	}
	groups := make([]int, 0, len(sv.instances))
	fresh := false
	for _, inst := range sv.instances {
		if inst.pgid > 0 {
			groups = append(groups, inst.pgid)
		}
		fresh = fresh || !inst.asked
	}
	return slices.DeleteFunc(pids, func(pid int) bool {
		if _, ok := sv.instances[pid]; ok {
			return true
		}
		if c.strays && fresh && !slices.Contains(c.members, pid) {
			return true
		}
		if len(groups) == 0 {
			return false
		}
		pgid, err := syscall.Getpgid(pid)
		return err == nil && slices.Contains(groups, pgid)
	})
}

// deadline is custody's next SIGKILL, rescan or sweep, zero if none.
func (c *custody) deadline() time.Time {
	switch {
	case c.empty():
		return c.sweepAt
	case c.killed:
		return earliest(c.sweepAt, c.rescanAt)
	default:
		return earliest(c.sweepAt, earliest(c.killAt, c.rescanAt))
	}
}

// tick sweeps a stream's cgroup when no instance runs, sends SIGKILL
// when its time has come, and rescans.
func (c *custody) tick(now time.Time) {
	if !c.sweepAt.IsZero() && !now.Before(c.sweepAt) {
		if c.sv.plan().live == 0 {
			c.sweep(now)
		} else {
			c.sweepAt = time.Time{} // the last of those running will set it again
		}
	}
	if c.empty() {
		return
	}
	if !c.killed && !now.Before(c.killAt) {
		c.killed = true
		c.sv.log.Warn().Ints("pids", c.members).Msg("killed leftovers")
		for _, pid := range c.members {
			c.sv.kill(pid, syscall.SIGKILL)
		}
	}
	if !now.Before(c.rescanAt) || c.killed {
		c.rescan(now)
	}
}
