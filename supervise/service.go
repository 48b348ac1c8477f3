package supervise

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
)

// state is where a service stands, as shown by list and logged on change.
type state uint8

const (
	stateDisabled state = iota // starts nothing; running instances carry on
	stateIdle                  // enabled, nothing to do until an event
	stateRunning               // enabled, at least one instance
	stateBackoff               // enabled, waiting out a crash delay
	stateStopping              // shutting down or removed: waiting for instances to end
	stateGone                  // no instances left after stopping; the goroutine has ended
)

func (s state) String() string {
	switch s {
	case stateDisabled:
		return "disabled"
	case stateIdle:
		return "idle"
	case stateRunning:
		return "running"
	case stateBackoff:
		return "backoff"
	case stateStopping:
		return "stopping"
	case stateGone:
		return "gone"
	default:
		return "state(" + strconv.Itoa(int(s)) + ")"
	}
}

// pidfileGrace is how long metad looks for a daemon's real pid after the
// program it started exited cleanly: daemons commonly write the pidfile
// from the child, just after the parent has exited.
const pidfileGrace = 5 * time.Second

// instance is one running process of a service.
type instance struct {
	pid      int
	pgid     int // process group the signals go to
	started  time.Time
	launcher bool           // pidfile service: the program that will daemonize
	sent     syscall.Signal // last signal metad sent, 0 if none
	asked    bool           // metad asked it to stop: its end is not a failure
	killAt   time.Time      // stopping: when SIGKILL follows; zero otherwise
	killed   bool
}

// pending is a pidfile daemon whose launcher has exited cleanly and whose
// real pid is still to be read from the pidfile.
type pending struct {
	started time.Time // when the launcher was started
	retryAt time.Time
	giveUp  time.Time
	delay   time.Duration
}

// service is the owner of one service's state. Every field below is touched
// only by the service's goroutine (run); others send it closures on reqs.
type service struct {
	sup  *Supervisor
	conf conffmt.Service
	spec *spec
	log  zerolog.Logger

	state      state
	enabled    bool
	quitting   bool // shutdown or removal: start nothing, end when empty
	instances  map[int]*instance
	pending    []*pending
	crashes    int       // crashes in a row
	holdUntil  time.Time // no automatic start before this (backoff)
	nextPeriod time.Time // daemon with period: next periodic start
	restarts   int       // instances that ended without being asked to
	readers    []*reader // watch_output pipes still being read
	timer      *time.Timer

	// stream
	sock     *os.File      // the listening socket, in Go's netpoller; nil while closed
	acceptor *acceptor     // nil while not accepting
	slots    chan struct{} // one token per instance or held slot; capacity max
	conns    chan conn     // accepted connections from the acceptor
	held     []time.Time   // when each slot held by a crash is given back

	inheritedFD int // a socket handed to metad at start for this service, until used; -1 if none

	// listener
	lfd         int           // metad's copy of the listening socket; -1 when closed
	watcher     *watcher      // waits for a connection while no instance runs
	ready       chan *watcher // a watcher saw a connection
	connWaiting bool          // a connection waits for a new instance

	exits *mailbox[initsys.Exit]
	reqs  chan func()
	done  chan struct{} // closed when run returns
}

func newService(sup *Supervisor, c conffmt.Service) *service {
	sv := &service{
		sup:       sup,
		conf:      c,
		spec:      newSpec(&c, sup.cfg.Env),
		log:       sup.cfg.Log.With().Str("svc", c.Name).Logger(),
		enabled:   c.Enabled,
		instances: make(map[int]*instance),
		exits:     newMailbox[initsys.Exit](),
		reqs:      make(chan func()),
		done:      make(chan struct{}),
		timer:     time.NewTimer(time.Hour),
		lfd:       -1,
	}
	sv.inheritedFD = -1
	if c.Class == conffmt.Stream || c.Class == conffmt.Listener {
		// Taken now, under the supervisor's lock: the rest are closed
		// once the config is loaded.
		sv.inheritedFD = sup.inherited.take(sv.endpoint())
	}
	sv.timer.Stop()
	switch c.Class {
	case conffmt.Stream:
		sv.slots = make(chan struct{}, c.Max)
		sv.conns = make(chan conn)
	case conffmt.Listener:
		sv.ready = make(chan *watcher, 1)
		sv.spec = sv.spec.listener(sup.shim, c.Name)
	}
	if !c.Enabled {
		sv.state = stateDisabled
	}
	return sv
}

// run is the service's goroutine: it handles requests, exits and the
// timer until the service has quit and has no instance left.
func (sv *service) run() {
	defer close(sv.done)
	defer sv.timer.Stop()
	defer sv.closeSockets()
	now := time.Now()
	if sv.conf.Period > 0 && sv.nextPeriod.IsZero() {
		sv.nextPeriod = now.Add(sv.conf.Period)
	}
	sv.reconcile(now)
	for !(sv.quitting && sv.live() == 0) {
		sv.arm(time.Now())
		select {
		case f := <-sv.reqs:
			f()
		case <-sv.exits.wake:
			for _, e := range sv.exits.take() {
				sv.exited(e)
			}
		case now := <-sv.timer.C:
			sv.tick(now)
		case c := <-sv.conns:
			sv.serve(time.Now(), c)
			sv.settle(time.Now())
		case w := <-sv.ready:
			sv.watched(w)
		}
	}
	sv.set(stateGone)
}

// call runs f in the service goroutine and waits for it. It returns
// errGone if the service has already ended.
func (sv *service) call(f func()) error {
	ran := make(chan struct{})
	select {
	case sv.reqs <- func() { f(); close(ran) }:
		<-ran
		return nil
	case <-sv.done:
		return errGone
	}
}

var errGone = errors.New("service is gone")

// onExit is handed to the reaper; it must not block.
func (sv *service) onExit(e initsys.Exit) { sv.exits.put(e) }

// live counts instances and daemons whose real pid is still to be read.
func (sv *service) live() int { return len(sv.instances) + len(sv.pending) }

// set records a state change and logs it.
func (sv *service) set(s state) {
	if sv.state == s {
		return
	}
	sv.log.Debug().Stringer("from", sv.state).Stringer("to", s).Msg("state")
	sv.state = s
}

// settle derives the state after an event.
func (sv *service) settle(now time.Time) {
	switch {
	case sv.quitting:
		sv.set(stateStopping)
	case !sv.enabled:
		sv.set(stateDisabled)
	case sv.live() > 0:
		sv.set(stateRunning)
	case now.Before(sv.holdUntil):
		sv.set(stateBackoff)
	default:
		sv.set(stateIdle)
	}
}

// reconcile applies the class rules: it starts what should run now.
func (sv *service) reconcile(now time.Time) {
	defer sv.settle(now)
	if !sv.enabled || sv.quitting {
		sv.closeSockets()
		return
	}
	switch sv.conf.Class {
	case conffmt.Daemon:
		sv.reconcileDaemon(now)
	case conffmt.Listener:
		sv.reconcileListener(now)
	case conffmt.Stream:
		if (sv.sock == nil || sv.acceptor == nil) && !now.Before(sv.holdUntil) {
			if err := sv.openStream(); err != nil {
				sv.socketFailed(now, err)
			}
		}
	default:
		sv.log.Error().Stringer("class", sv.conf.Class).Msg("unknown class")
	}
}

// closeSockets closes metad's listening socket, if any: a disabled socket
// service refuses connections.
func (sv *service) closeSockets() {
	if sv.inheritedFD >= 0 {
		unix.Close(sv.inheritedFD)
		sv.inheritedFD = -1
	}
	sv.closeStream()
	sv.closeListener()
	sv.connWaiting = false
}

// watched handles a listener's watcher that saw a connection.
func (sv *service) watched(w *watcher) {
	if sv.watcher == w {
		sv.watcher = nil
		<-w.done
		unix.Close(w.cancel)
	}
	if sv.live() == 0 && sv.enabled && !sv.quitting {
		sv.connWaiting = true
	}
	sv.reconcile(time.Now())
}

func (sv *service) reconcileDaemon(now time.Time) {
	c := &sv.conf
	if c.Period > 0 && !now.Before(sv.nextPeriod) {
		// One periodic start is due; missed periods are not made up.
		for !now.Before(sv.nextPeriod) {
			sv.nextPeriod = sv.nextPeriod.Add(c.Period)
		}
		if sv.live() < c.Max && !now.Before(sv.holdUntil) {
			sv.startAuto(now, "period")
		}
	}
	for sv.live() < c.Min && !now.Before(sv.holdUntil) {
		if !sv.startAuto(now, "min") {
			return
		}
	}
}

// startAuto starts an instance by the class rules. A program that cannot
// be started counts as a crash, so a missing binary backs off like a
// crashing one. It reports whether an instance was started.
func (sv *service) startAuto(now time.Time, why string) bool {
	if err := sv.start(now); err != nil {
		sv.crashes = NextCrashes(sv.crashes, Crashed)
		delay := Delay(sv.crashes, sv.conf.Backoff)
		sv.holdUntil = now.Add(delay)
		sv.log.Error().Err(err).Str("why", why).Stringer("delay", delay).Msg("cannot start")
		return false
	}
	return true
}

// start starts one instance now.
func (sv *service) start(now time.Time) error {
	files := []int{sv.sup.stdin, sv.sup.stdout, sv.sup.stderr}
	if sv.conf.Class == conffmt.Listener {
		if sv.lfd < 0 {
			return errors.New("cannot start a listener without its socket")
		}
		files = append(files, sv.lfd)
	}
	var out *output
	if sv.conf.Watch {
		var err error
		if out, err = newOutput("stdout", "stderr"); err != nil {
			return fmt.Errorf("cannot watch output: %w", err)
		}
		files[1], files[2] = out.writeFD(0), out.writeFD(1)
	}
	pid, err := sv.sup.cfg.Procs.Spawn(sv.spec.proc(files), sv.onExit)
	if out != nil {
		out.closeWriters()
	}
	if err != nil {
		if out != nil {
			out.closeReaders()
		}
		return err
	}
	inst := &instance{pid: pid, pgid: pid, started: now, launcher: sv.conf.Pidfile != ""}
	sv.instances[pid] = inst
	sv.log.Info().Int("pid", pid).Msg("started")
	if out != nil {
		sv.watchOutput(out, pid)
	}
	return nil
}

// watchOutput starts logging the pipes of a new instance.
func (sv *service) watchOutput(out *output, pid int) {
	live := sv.readers[:0]
	for _, rd := range sv.readers {
		if !rd.ended() {
			live = append(live, rd)
		}
	}
	sv.readers = append(live, out.start(pid, sv.log.With().Int("pid", pid).Logger())...)
}

// takeExit removes the instance that ended, classifies and logs its end.
// ok is false for a pid that is not an instance.
func (sv *service) takeExit(e initsys.Exit) (inst *instance, outcome Outcome, asked, ok bool) {
	inst, ok = sv.instances[e.PID]
	if !ok {
		sv.log.Warn().Int("pid", e.PID).Msg("exit of an unknown instance")
		return nil, Clean, false, false
	}
	delete(sv.instances, e.PID)
	ran := e.Time.Sub(inst.started)
	code, sig := e.Code(), syscall.Signal(0)
	if s, signaled := e.Signaled(); signaled {
		code, sig = -1, s
	}
	asked = inst.asked || (sig != 0 && sig == inst.sent)
	outcome = Classify(ran, sv.conf.Crash, code, sig, asked)
	ev := sv.log.Info()
	if sv.conf.Class == conffmt.Stream && outcome == Clean {
		ev = sv.log.Debug() // one per connection: only failures are news
	}
	ev.Int("pid", e.PID).Str("status", e.String()).Stringer("ran", ran.Round(time.Millisecond)).Stringer("outcome", outcome).Msg("exited")
	return inst, outcome, asked, true
}

// exited handles the end of an instance, as reported by the reaper.
func (sv *service) exited(e initsys.Exit) {
	inst, outcome, asked, ok := sv.takeExit(e)
	if !ok {
		return
	}
	now := e.Time
	if sv.conf.Class == conffmt.Stream {
		sv.streamEnded(now, outcome, asked)
		sv.settle(now)
		return
	}
	if inst.launcher && outcome == Clean && !asked && !sv.quitting {
		// The program daemonized: the real daemon's pid comes from the pidfile.
		sv.pending = append(sv.pending, &pending{started: inst.started, retryAt: now, giveUp: now.Add(pidfileGrace), delay: 10 * time.Millisecond})
		sv.tick(now)
		return
	}
	sv.ended(now, outcome, asked)
}

// ended updates the crash count and restarts what the rules want.
func (sv *service) ended(now time.Time, outcome Outcome, asked bool) {
	if !asked && !sv.quitting {
		sv.restarts++
	}
	sv.crashes = NextCrashes(sv.crashes, outcome)
	if outcome == Crashed {
		delay := Delay(sv.crashes, sv.conf.Backoff)
		sv.holdUntil = now.Add(delay)
		sv.log.Warn().Int("crashes", sv.crashes).Stringer("delay", delay).Msg("backoff")
	} else {
		sv.holdUntil = time.Time{}
	}
	sv.reconcile(now)
}

// tick handles every deadline that has passed: SIGKILL after the stop
// timeout, pidfile reads, backoff and period starts.
func (sv *service) tick(now time.Time) {
	for _, inst := range sv.instances {
		if !inst.killAt.IsZero() && !inst.killed && !now.Before(inst.killAt) {
			inst.killed = true
			sv.log.Warn().Int("pid", inst.pid).Msg("killed")
			sv.signal(inst, syscall.SIGKILL)
		}
	}
	var failed []*pending
	kept := sv.pending[:0]
	for _, p := range sv.pending {
		switch {
		case sv.quitting:
			continue
		case now.Before(p.retryAt):
			kept = append(kept, p)
			continue
		}
		err := sv.adopt(p)
		switch {
		case err == nil:
		case now.Before(p.giveUp):
			p.delay *= 2
			p.retryAt = now.Add(p.delay)
			kept = append(kept, p)
		default:
			sv.log.Error().Err(err).Msg("cannot follow daemon")
			failed = append(failed, p)
		}
	}
	sv.pending = kept
	sv.releaseHeld(now)
	for _, p := range failed {
		sv.ended(now, Classify(now.Sub(p.started), sv.conf.Crash, 1, 0, false), false)
	}
	sv.reconcile(now)
}

// adopt reads the pidfile and registers the daemon it names.
func (sv *service) adopt(p *pending) error {
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
	pgid, err := syscall.Getpgid(pid)
	if err != nil || pgid == syscall.Getpgrp() {
		pgid = 0
	}
	inst := &instance{pid: pid, pgid: pgid, started: p.started}
	sv.instances[pid] = inst
	if err := sv.sup.cfg.Procs.Adopt(pid, sv.onExit); err != nil {
		delete(sv.instances, pid)
		return err
	}
	sv.log.Info().Int("pid", pid).Str("pidfile", sv.conf.Pidfile).Msg("following daemon")
	return nil
}

// arm sets the one timer of the service to the earliest deadline.
func (sv *service) arm(now time.Time) {
	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, inst := range sv.instances {
		if !inst.killed {
			earliest(inst.killAt)
		}
	}
	for _, p := range sv.pending {
		earliest(p.retryAt)
	}
	for _, t := range sv.held {
		earliest(t)
	}
	if sv.enabled && !sv.quitting {
		switch {
		case sv.conf.Class == conffmt.Stream && sv.sock == nil,
			sv.conf.Class == conffmt.Listener && (sv.lfd < 0 || (sv.live() == 0 && (sv.connWaiting || sv.conf.Min > 0))),
			sv.conf.Class == conffmt.Daemon && sv.live() < sv.conf.Min:
			earliest(sv.holdUntil)
		}
	}
	if sv.enabled && !sv.quitting && sv.conf.Class == conffmt.Daemon {
		if sv.conf.Period > 0 {
			t := sv.nextPeriod
			if t.Before(sv.holdUntil) {
				t = sv.holdUntil
			}
			earliest(t)
		}
	}
	sv.timer.Stop()
	if !next.IsZero() {
		sv.timer.Reset(next.Sub(now))
	}
}

// signal sends sig to the instance's process group (or to the process
// alone when it has no group of its own).
func (sv *service) signal(inst *instance, sig syscall.Signal) {
	inst.sent = sig
	target := inst.pid
	if inst.pgid > 0 {
		target = -inst.pgid
	}
	if err := sv.sup.cfg.Signal(target, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		sv.log.Warn().Err(err).Int("pid", inst.pid).Msg("cannot signal")
	}
}

// stopInstances asks every instance to stop, with SIGKILL after the stop
// timeout.
func (sv *service) stopInstances(now time.Time) {
	for _, inst := range sv.instances {
		if inst.asked {
			continue
		}
		inst.asked = true
		inst.killAt = now.Add(sv.sup.cfg.StopTimeout)
		sv.log.Info().Int("pid", inst.pid).Stringer("signal", sv.conf.Stop).Msg("stopping")
		sv.signal(inst, sv.conf.Stop)
	}
	sv.pending = nil
}

// status returns a snapshot for list.
func (sv *service) status() Status {
	st := Status{
		Name:     sv.conf.Name,
		Class:    sv.conf.Class,
		Enabled:  sv.enabled,
		State:    sv.state.String(),
		Restarts: sv.restarts,
		Crashes:  sv.crashes,
		Port:     sv.conf.Port,
	}
	for _, inst := range sv.instances {
		st.Instances = append(st.Instances, Instance{PID: inst.pid, Started: inst.started})
	}
	sortInstances(st.Instances)
	if sv.enabled && !sv.quitting && sv.conf.Class == conffmt.Daemon {
		next := time.Time{}
		if sv.live() < sv.conf.Min {
			next = sv.holdUntil
		}
		if sv.conf.Period > 0 {
			next = sv.nextPeriod
			if next.Before(sv.holdUntil) {
				next = sv.holdUntil
			}
		}
		if next.After(time.Now()) {
			st.NextStart = next
		}
	}
	return st
}
