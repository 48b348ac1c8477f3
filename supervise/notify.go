package supervise

import (
	"errors"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"metad/supervise/notify"
)

// ready=notify (SPEC §8): each such service has a datagram socket of its
// own, given to its programs as NOTIFY_SOCKET. A helper goroutine waits
// until datagrams are waiting and says so; the service goroutine reads
// them itself, checks that each comes from a process of the service (its
// sender's credentials), and applies it. Anything else is ignored and
// logged, at most once per notifyWarnEvery.

// notifyBatch is the most datagrams read per wake-up, so that a flood
// does not keep the service from its other events.
const notifyBatch = 64

// notifyWarnEvery limits the log of ignored notifications.
const notifyWarnEvery = 10 * time.Second

// notifier is a service's NOTIFY_SOCKET.
type notifier struct {
	sock   *notify.Socket
	rearm  chan struct{} // the waiter waits again once the service has read
	waiter *helper

	warned  time.Time // when an ignored notification was last logged
	ignored int       // ignored since then
}

func (n *notifier) addr() string { return n.sock.Addr() }

// openNotify opens the service's notify socket unless it is open.
func (sv *service) openNotify() error {
	if sv.notify != nil {
		return nil
	}
	s, err := notify.Listen(sv.conf.Name)
	if err != nil {
		return err
	}
	sv.useNotify(s)
	return nil
}

// useNotify makes s the service's notify socket and starts its waiter.
func (sv *service) useNotify(s *notify.Socket) {
	n := &notifier{sock: s, rearm: make(chan struct{}, 1)}
	sv.notify = n
	n.waiter = sv.goHelper(func(stop <-chan struct{}) {
		for {
			if err := s.Wait(stop); err != nil {
				return
			}
			sv.events.put(event{kind: evNotify})
			select {
			case <-n.rearm:
			case <-stop:
				return
			}
		}
	})
}

// closeNotify closes the notify socket, if any.
func (sv *service) closeNotify() {
	n := sv.notify
	if n == nil {
		return
	}
	sv.notify = nil
	n.waiter.cancel()
	n.sock.Close()
}

// readNotify reads and applies the datagrams waiting, then lets the
// waiter wait again.
func (sv *service) readNotify(now time.Time) {
	n := sv.notify
	if n == nil {
		return
	}
	defer nudge(n.rearm)
	for range notifyBatch {
		d, err := n.sock.Recv()
		if err != nil {
			if !errors.Is(err, notify.ErrNoDatagram) {
				sv.log.Error().Err(err).Msg("cannot read notifications")
			}
			return
		}
		sv.notified(d, now)
	}
}

// notified applies one datagram.
func (sv *service) notified(d notify.Datagram, now time.Time) {
	inst := sv.sender(d.PID)
	switch {
	case inst == nil:
		sv.ignore(d, now, "from a process outside the service")
		return
	case d.Truncated:
		sv.ignore(d, now, "too long")
		return
	case d.Err != nil:
		sv.ignore(d, now, d.Err.Error())
		return
	}
	m := d.Message
	if m.HasStatus {
		sv.said = m.Status
	}
	if m.HasErrno {
		sv.log.Warn().Int("pid", d.PID).Int("errno", int(m.Errno)).Str("error", m.Errno.Error()).Msg("the program reported an error")
	}
	if m.MainPID > 0 && m.MainPID != inst.pid {
		sv.log.Info().Int("pid", inst.pid).Int("mainpid", m.MainPID).Msg("the program names another main process: signals still go to its process group")
	}
	if m.HasExtendTimeout {
		until := now.Add(m.ExtendTimeout)
		switch {
		case inst.asked && !inst.killed && inst.killAt.Before(until):
			inst.killAt = until
		case !inst.ready && !inst.readyBy.IsZero() && inst.readyBy.Before(until):
			inst.readyBy = until
		}
	}
	switch {
	case m.Stopping:
		inst.quitting = "the program said it is stopping (STOPPING=1)"
	case m.Ready:
		sv.markReady(inst, now, "READY=1")
	case m.Reloading && inst.ready:
		inst.ready = false
		sv.log.Info().Int("pid", inst.pid).Msg("reloading (RELOADING=1)")
	}
	switch m.Watchdog {
	case notify.WatchdogPing:
		sv.watchdogKick(inst, now, false)
	case notify.WatchdogTrigger:
		sv.watchdogKick(inst, now, true)
	}
}

// ignore logs an ignored datagram, at most once per notifyWarnEvery with
// the number ignored meanwhile.
func (sv *service) ignore(d notify.Datagram, now time.Time, why string) {
	n := sv.notify
	n.ignored++
	if now.Sub(n.warned) < notifyWarnEvery {
		return
	}
	sv.log.Warn().Int("pid", d.PID).Uint32("uid", d.UID).Str("why", why).Int("ignored", n.ignored).Msg("notification ignored")
	n.warned, n.ignored = now, 0
}

// sender returns the instance a process that sent a notification belongs
// to: the instance itself, a process in its process group or session, or
// in the service's cgroup when only one instance runs; nil if none.
func (sv *service) sender(pid int) *instance {
	if pid <= 0 {
		return nil
	}
	if inst := sv.byPID(pid); inst != nil {
		return inst
	}
	pgid, perr := unix.Getpgid(pid)
	sid, serr := unix.Getsid(pid)
	for _, inst := range sv.instances {
		if perr == nil && inst.pgid > 0 && pgid == inst.pgid || serr == nil && inst.sid > 0 && sid == inst.sid {
			return inst
		}
	}
	if sv.group == nil || len(sv.instances) != 1 {
		return nil
	}
	if pids, err := sv.group.PIDs(); err == nil && slices.Contains(pids, pid) {
		for _, inst := range sv.instances {
			return inst
		}
	}
	return nil
}
