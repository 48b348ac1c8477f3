package supervise

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"metad/conffmt"
)

// daemonClass is the class rule of daemon services: at least min instances,
// one more every period up to max, and pidfile daemons followed by the
// pid they write.
type daemonClass struct {
	sv         *service
	nextPeriod time.Time  // with a period: when the next periodic start is due
	pending    []*pending // pidfile daemons whose real pid is still to be read
}

// pending is a pidfile daemon whose launcher has exited cleanly and whose
// real pid is still to be read from the pidfile.
type pending struct {
	started time.Time // when the launcher was started
	retryAt time.Time
	giveUp  time.Time
	delay   time.Duration

	launcher int     // the launcher's pid
	probe    *helper // the readiness helper started with the launcher; nil if none
}

func newDaemon(sv *service) *daemonClass {
	d := &daemonClass{sv: sv}
	if sv.conf.Period > 0 {
		d.nextPeriod = time.Now().Add(sv.conf.Period)
	}
	return d
}

func (d *daemonClass) plan(p *plan) {
	p.live += len(d.pending)
	p.nextPeriod = d.nextPeriod
}

// skipPeriods moves a period that came round while max instances ran
// past now: missed periods are not made up.
func (d *daemonClass) skipPeriods(now time.Time) {
	c := &d.sv.conf
	if c.Period <= 0 || now.Before(d.nextPeriod) {
		return
	}
	for !now.Before(d.nextPeriod) {
		d.nextPeriod = d.nextPeriod.Add(c.Period)
	}
}

func (d *daemonClass) start(now time.Time, why reason) error {
	if why == forPeriod {
		d.skipPeriods(now)
	}
	sv := d.sv
	inst, err := sv.launch(now, []int{sv.sup.stdin, sv.sup.stdout, sv.sup.stderr}, nil, remote{})
	if err != nil {
		return err
	}
	sv.log.Info().Int("pid", inst.pid).Str("why", why.String()).Msg("started")
	return nil
}

func (d *daemonClass) close() {}

func (d *daemonClass) ended(inst *instance, end ending) {
	sv, now := d.sv, end.exit.Time
	if inst.launcher && end.outcome == Clean && !end.asked && !sv.quitting {
		// The program daemonized: the real daemon's pid comes from the pidfile.
		d.pending = append(d.pending, &pending{started: inst.started, retryAt: now, giveUp: now.Add(pidfileGrace), delay: 10 * time.Millisecond, launcher: inst.pid, probe: inst.probe})
		d.tick(now)
		return
	}
	sv.countEnd(now, end)
}

func (d *daemonClass) deadline() time.Time {
	var t time.Time
	for _, p := range d.pending {
		t = earliest(t, p.retryAt)
	}
	if d.sv.active() && d.sv.conf.Period > 0 && len(d.sv.instances)+len(d.pending) >= d.sv.conf.Max {
		t = earliest(t, d.nextPeriod) // to skip it: max run (else next schedules it)
	}
	return t
}

// tick reads the pidfiles that are due and skips periods that came round
// at max.
func (d *daemonClass) tick(now time.Time) {
	sv := d.sv
	var failed []*pending
	kept := d.pending[:0]
	for _, p := range d.pending {
		switch {
		case sv.quitting:
			p.probe.cancel()
			continue
		case now.Before(p.retryAt):
			kept = append(kept, p)
			continue
		}
		err := d.adopt(p, now)
		switch {
		case err == nil:
		case now.Before(p.giveUp):
			p.delay *= 2
			p.retryAt = now.Add(p.delay)
			kept = append(kept, p)
		default:
			sv.log.Error().Err(err).Msg("cannot follow daemon")
			p.probe.cancel()
			failed = append(failed, p)
		}
	}
	d.pending = kept
	for _, p := range failed {
		ran := now.Sub(p.started)
		end := ending{ran: ran, outcome: Classify(ran, sv.conf.Crash, 1, 0, false)}
		sv.countEnd(now, end)
	}
	if len(sv.instances)+len(d.pending) >= sv.conf.Max {
		d.skipPeriods(now)
	}
}

// adopt reads the pidfile and registers the daemon it names, with its
// session in custody unless it is metad's own.
func (d *daemonClass) adopt(p *pending, now time.Time) error {
	sv := d.sv
	b, err := os.ReadFile(sv.conf.Pidfile)
	if err != nil {
		return fmt.Errorf("cannot read pidfile: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("cannot read pidfile %q: no pid in it", sv.conf.Pidfile)
	}
	if _, ok := sv.instances[pid]; ok {
		return fmt.Errorf("cannot adopt pid %d: already an instance", pid)
	}
	sid, err := unix.Getsid(pid)
	if own, _ := unix.Getsid(0); err != nil || sid == own {
		sid = 0
	}
	inst := &instance{pid: pid, pgid: groupOf(pid), sid: sid, started: p.started, adopted: true}
	sv.instances[pid] = inst
	if err := sv.sup.cfg.Procs.Adopt(pid, sv.onExit); err != nil {
		delete(sv.instances, pid)
		return err
	}
	switch k := sv.conf.Ready.Kind; {
	case k == conffmt.ReadyStarted && sv.oneShot():
	case k == conffmt.ReadyStarted:
		inst.ready = true
		sv.startHealth(inst, now)
	case p.probe != nil:
		inst.probe, inst.via = p.probe, p.launcher
		p.probe = nil
		inst.readyBy = now.Add(sv.conf.ReadyTimeout)
	case k == conffmt.ReadyTCP || k == conffmt.ReadyExec:
		inst.probe = sv.tryReady(pid, sv.conf.Ready.Probe)
		inst.readyBy = now.Add(sv.conf.ReadyTimeout)
	default:
		inst.readyBy = now.Add(sv.conf.ReadyTimeout)
	}
	sv.log.Info().Int("pid", pid).Str("pidfile", sv.conf.Pidfile).Msg("following daemon")
	return nil
}

func (d *daemonClass) wakeup() <-chan struct{} { return nil }
func (d *daemonClass) woke(time.Time)          {}

func (d *daemonClass) update(old *conffmt.Service, now time.Time) bool {
	if old.Period != d.sv.conf.Period {
		d.nextPeriod = now.Add(d.sv.conf.Period)
	}
	return !inPlace(*old, d.sv.conf)
}

func (d *daemonClass) status(*Status, time.Time) {}

func (d *daemonClass) freeze() {}
func (d *daemonClass) thaw()   {}

func (d *daemonClass) snapshot(ss *ServiceState) {
	ss.NextPeriod = d.nextPeriod
	for _, p := range d.pending {
		ss.Pending = append(ss.Pending, p.started)
	}
}

func (d *daemonClass) restore(ss *ServiceState, now time.Time) error {
	d.nextPeriod = ss.NextPeriod
	for _, started := range ss.Pending {
		d.pending = append(d.pending, &pending{started: started, retryAt: now, giveUp: now.Add(pidfileGrace), delay: 10 * time.Millisecond})
	}
	return nil
}

func (d *daemonClass) idle() bool { return true }

// stopped forgets the daemons still to be found: a stop or restart
// stops what runs, and nothing runs yet there.
func (d *daemonClass) stopped() {
	for _, p := range d.pending {
		p.probe.cancel()
	}
	d.pending = nil
}

// groupOf returns pid's process group, or 0 when it is metad's own or
// unknown: signals then go to the process alone.
func groupOf(pid int) int {
	pgid, err := syscall.Getpgid(pid)
	if err != nil || pgid == syscall.Getpgrp() {
		return 0
	}
	return pgid
}
