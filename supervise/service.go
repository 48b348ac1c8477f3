package supervise

import (
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"metad/conffmt"
	"metad/init"
)

// state is where a service stands, as shown by list and logged at info on
// every change with its reason (SPEC §8). Readiness is not implemented
// yet: a started instance counts as ready, shown as "running".
type state uint8

const (
	stateDisabled state = iota // starts nothing; running instances carry on
	stateIdle                  // enabled, nothing running, nothing due (listener: waits for a connection)
	stateRunning               // enabled and started: a daemon's or listener's instances run, a stream listens
	stateBackoff               // enabled, waiting out a crash delay before the next start
	stateStopping              // leftovers of an ended instance, or everything at removal or shutdown, are being stopped
	stateDone                  // removed or shut down: nothing left; the goroutine has ended
	stateCount                 // the number of states, not a state
)

// States returns the name of every state a service can be in, in the
// order of the state machine: what Status.State may hold.
func States() []string {
	names := make([]string, 0, stateCount)
	for s := range stateCount {
		names = append(names, s.String())
	}
	return names
}

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
	case stateDone:
		return "done"
	default:
		return "state(" + strconv.Itoa(int(s)) + ")"
	}
}

// class is what differs between daemon, listener and stream services.
// Each implementation owns its fields; every method is called from the
// service's goroutine only.
type class interface {
	// plan adds the class's inputs to the schedule.
	plan(p *plan)
	// start does what the schedule says is due now.
	start(now time.Time, why reason) error
	// close closes the class's socket, if any: a disabled socket service
	// refuses connections.
	close()
	// ended handles the end of one of the class's instances, already
	// removed from the service and classified.
	ended(inst *instance, end ending)
	// deadline is the class's earliest deadline other than a start (zero
	// if none); tick handles every one that has passed.
	deadline() time.Time
	tick(now time.Time)
	// wakeup is the class's event channel (nil if none); woke handles it.
	wakeup() <-chan struct{}
	woke(now time.Time)
	// update applies a changed config (sv.conf is already the new one)
	// and reports whether the running instances must be replaced.
	update(old *conffmt.Service, now time.Time) (replace bool)
	// status adds the class's fields to a snapshot.
	status(st *Status, now time.Time)
	// freeze stops what runs beside the service goroutine, for a handover;
	// thaw starts it again after a failed one.
	freeze()
	thaw()
	// snapshot and restore carry the class's state across a re-exec.
	snapshot(ss *ServiceState)
	restore(ss *ServiceState, now time.Time) error
	// stopped is called when the instances are asked to stop.
	stopped()
	// idle reports whether nothing of the class runs any more (helper
	// goroutines ended), once the service is quitting.
	idle() bool
}

// pidfileGrace is how long metad looks for a daemon's real pid after the
// program it started exited cleanly: daemons commonly write the pidfile
// from the child, just after the parent has exited.
const pidfileGrace = 5 * time.Second

// instance is one running process of a service.
type instance struct {
	pid      int
	pgid     int // process group the signals go to; 0: the process alone
	sid      int // session whose leftovers are in custody when it ends; 0: none
	started  time.Time
	launcher bool           // pidfile service: the program that will daemonize
	adopted  bool           // pidfile service: the daemon, found by its pidfile
	remote   remote         // stream: the client
	sent     syscall.Signal // last signal metad sent, 0 if none
	asked    bool           // metad asked it to stop: its end is not a failure
	killAt   time.Time      // stopping: when SIGKILL follows; zero otherwise
	killed   bool
}

// ending is how an instance ended.
type ending struct {
	exit    initsys.Exit
	ran     time.Duration
	outcome Outcome
	asked   bool
}

// service is the owner of one service's state. Every field below is touched
// only by the service's goroutine (run); others send it requests on reqs.
type service struct {
	sup  *Supervisor
	conf conffmt.Service
	spec *spec
	log  zerolog.Logger
	cls  class

	state    state
	reason   string
	enabled  bool
	quitting bool // shutdown or removal: start nothing, end when nothing is left
	backoff  backoff
	restarts int        // instances that ended without being asked to (stream: failed ones)
	starts   int        // instances started
	since    time.Time  // when the service entered its state
	startErr startError // the last start that failed
	tail     *tail      // watch_output: the last lines of output; nil otherwise
	ended    int        // instances that ended
	lastExit LastExit   // the last instance's end; zero before the first

	instances map[int]*instance
	group     group // the service's cgroup; nil: none
	custody   custody
	readers   []*reader // watch_output pipes still being read
	timer     *time.Timer

	inheritedFD int // a socket handed to metad at start for this service, until used; -1 if none

	exits *mailbox[initsys.Exit]
	reqs  chan func()
	done  chan struct{} // closed when run returns

	parked    func() // set by a handover request: run calls it next
	abandoned bool   // handed over to a new image: end without touching anything
}

func newService(sup *Supervisor, c conffmt.Service) *service {
	sv := &service{
		sup:         sup,
		conf:        c,
		spec:        newSpec(&c, sup.cfg.Env),
		log:         sup.cfg.Log.With().Str("svc", c.Name).Logger(),
		enabled:     c.Enabled,
		instances:   make(map[int]*instance),
		exits:       newMailbox[initsys.Exit](),
		reqs:        make(chan func()),
		done:        make(chan struct{}),
		timer:       time.NewTimer(time.Hour),
		inheritedFD: -1,
		since:       time.Now(),
	}
	sv.timer.Stop()
	sv.custody.sv = sv
	sv.group = sup.takeGroup(c.Name)
	if c.Class == conffmt.Stream || c.Class == conffmt.Listener {
		// Taken now, under the supervisor's lock: the rest are closed
		// once the config is loaded.
		sv.inheritedFD = sup.inherited.take(sv.endpoint())
	}
	switch c.Class {
	case conffmt.Stream:
		sv.cls = newStream(sv)
	case conffmt.Listener:
		sv.spec = sv.spec.listener(sup.shim, c.Name)
		sv.cls = newListener(sv)
	default:
		sv.cls = newDaemon(sv)
	}
	if !c.Enabled {
		sv.state = stateDisabled
	} else {
		sv.state = stateIdle
	}
	return sv
}

// run is the service's goroutine: it handles requests, exits, class
// events and the timer until the service has quit and nothing of it is
// left.
func (sv *service) run() {
	defer close(sv.done)
	defer sv.timer.Stop()
	sv.reconcile(time.Now())
	for !sv.finished() {
		sv.arm(time.Now())
		select {
		case f := <-sv.reqs:
			f()
			if sv.parked != nil {
				sv.parked()
			}
		case <-sv.exits.wake:
			for _, e := range sv.exits.take() {
				sv.exited(e)
			}
			sv.reconcile(time.Now())
		case now := <-sv.timer.C:
			sv.tick(now)
		case <-sv.cls.wakeup():
			sv.cls.woke(time.Now())
			sv.settle(time.Now())
		}
	}
	if !sv.abandoned {
		sv.set(stateDone, "nothing left")
		sv.sup.releaseGroup(sv.conf.Name, sv.group)
	}
}

// finished reports whether the service has quit and nothing of it runs,
// or has been handed over.
func (sv *service) finished() bool {
	return sv.abandoned || sv.quitting && len(sv.instances) == 0 && sv.custody.empty() && sv.cls.idle()
}

// onExit is handed to the reaper; it must not block.
func (sv *service) onExit(e initsys.Exit) { sv.exits.put(e) }

// active reports whether the class rules may start instances.
func (sv *service) active() bool { return sv.enabled && !sv.quitting }

// plan returns the inputs of the schedule.
func (sv *service) plan() plan {
	p := plan{
		class:  sv.conf.Class,
		active: sv.active(),
		live:   len(sv.instances),
		min:    sv.conf.Min,
		max:    sv.conf.Max,
		period: sv.conf.Period,
		hold:   sv.backoff.until,
	}
	if sv.conf.Class != conffmt.Stream {
		p.custody = !sv.custody.empty()
	}
	sv.cls.plan(&p)
	return p
}

// set records a state change and logs it at info with its reason.
func (sv *service) set(s state, reason string) {
	if sv.state == s && sv.reason == reason {
		return
	}
	sv.log.Info().Stringer("from", sv.state).Stringer("to", s).Str("reason", reason).Msg("state")
	if sv.state != s {
		sv.since = time.Now()
	}
	sv.state, sv.reason = s, reason
}

// settle derives the state after an event: the one place that decides it.
func (sv *service) settle(now time.Time) {
	p := sv.plan()
	at, why := next(p, now)
	switch {
	case sv.quitting:
		sv.set(stateStopping, "stopping for good")
	case !sv.custody.empty() && sv.conf.Class != conffmt.Stream:
		sv.set(stateStopping, "stopping leftovers of an ended instance")
	case !sv.enabled:
		sv.set(stateDisabled, "disabled")
	case why != noStart && at.After(now):
		sv.set(stateBackoff, "waiting out the backoff before the next start ("+why.String()+")")
	case sv.conf.Class == conffmt.Stream && p.open:
		sv.set(stateRunning, "listening")
	case sv.conf.Class != conffmt.Stream && p.live > 0:
		sv.set(stateRunning, "started")
	case sv.conf.Class == conffmt.Listener:
		sv.set(stateIdle, "waiting for a connection")
	default:
		sv.set(stateIdle, "nothing to start")
	}
}

// reconcile applies the class rules: it starts what is due now, then
// settles the state.
func (sv *service) reconcile(now time.Time) {
	defer sv.settle(now)
	if !sv.active() {
		sv.closeSockets()
		return
	}
	for range sv.conf.Max + 2 { // each pass starts one; bounded for safety
		at, why := next(sv.plan(), now)
		if why == noStart || at.After(now) {
			return
		}
		if err := sv.cls.start(now, why); err != nil {
			d := sv.backoff.record(now, Crashed, sv.conf.Backoff)
			msg := "cannot start"
			if why == forListen {
				msg = "cannot listen"
			}
			sv.log.Error().Err(err).Str("why", why.String()).Stringer("delay", d).Msg(msg)
			sv.startErr = startError{err: err.Error(), at: now}
			return
		}
	}
}

// closeSockets closes metad's listening socket, if any.
func (sv *service) closeSockets() {
	if sv.inheritedFD >= 0 {
		closeFD(sv.inheritedFD)
		sv.inheritedFD = -1
	}
	sv.cls.close()
}

// launch is the one path that starts an instance: files are its
// descriptors 0, 1, 2 and more; with watch_output, stdout and stderr are
// replaced by pipes (a stream instance's stderr only: its stdout is its
// connection). extra are variables set last, after the service's
// environment and its env files (a stream's PROTO and TCP*). rem is a
// stream instance's client, the zero remote for the other classes.
func (sv *service) launch(now time.Time, files []int, extra []string, rem remote) (*instance, error) {
	p, err := sv.spec.proc(files) // reads the env files: may fail as an exec would
	if err != nil {
		return nil, err
	}
	if extra != nil {
		p.Env = append(p.Env[:len(p.Env):len(p.Env)], extra...)
	}
	var out *output
	if sv.conf.Watch {
		names := []string{"stdout", "stderr"}
		if rem.valid() {
			names = names[1:]
		}
		var err error
		if out, err = newOutput(names...); err != nil {
			return nil, fmt.Errorf("cannot watch output: %w", err)
		}
		for i := range names {
			files[3-len(names)+i] = out.writeFD(i)
		}
	}
	p.Files = files
	if sv.group != nil {
		sv.group.into(p)
	}
	pid, err := sv.sup.cfg.Procs.Spawn(p, sv.onExit)
	if out != nil {
		out.closeWriters()
	}
	if err != nil {
		if out != nil {
			out.closeReaders()
		}
		return nil, err
	}
	inst := &instance{pid: pid, pgid: pid, sid: pid, started: now, remote: rem, launcher: sv.conf.Pidfile != ""}
	sv.instances[pid] = inst
	sv.starts++
	if out != nil {
		sv.watchOutput(out, pid)
	}
	return inst, nil
}

// watchOutput starts logging the pipes of a new instance.
func (sv *service) watchOutput(out *output, pid int) {
	live := sv.readers[:0]
	for _, rd := range sv.readers {
		if !rd.ended() {
			live = append(live, rd)
		}
	}
	if sv.tail == nil {
		sv.tail = &tail{}
	}
	sv.readers = append(live, out.start(pid, sv.log.With().Int("pid", pid).Logger(), sv.tail)...)
}

// exited handles an exit reported by the reaper: an instance's, or a
// process in custody's.
func (sv *service) exited(e initsys.Exit) {
	inst, ok := sv.instances[e.PID]
	if !ok {
		if !sv.custody.exited(e.PID, e.Time) {
			sv.log.Warn().Int("pid", e.PID).Msg("exit of an unknown instance")
		}
		return
	}
	end := sv.takeExit(inst, e)
	if !(inst.launcher && end.outcome == Clean && !end.asked) {
		// A launcher that daemonized leaves its daemon behind on purpose.
		sv.custody.add(inst, e.Time)
	}
	sv.cls.ended(inst, end)
}

// takeExit removes the instance that ended, classifies and logs its end.
func (sv *service) takeExit(inst *instance, e initsys.Exit) ending {
	delete(sv.instances, e.PID)
	ran := e.Time.Sub(inst.started)
	code, sig := e.Code(), syscall.Signal(0)
	if s, signaled := e.Signaled(); signaled {
		code, sig = -1, s
	}
	asked := inst.asked || (sig != 0 && sig == inst.sent)
	outcome := Classify(ran, sv.conf.Crash, code, sig, asked)
	if outcome != Clean && inst.remote.valid() && PeerWentAway(code, sig) {
		outcome = PeerGone
	}
	ev := sv.log.Info()
	if inst.remote.valid() && (outcome == Clean || outcome == PeerGone) {
		ev = sv.log.Debug() // one per connection: only failures are news
	}
	ev.Int("pid", e.PID).Str("status", e.String()).Stringer("ran", ran.Round(time.Millisecond)).Stringer("outcome", outcome).Msg("exited")
	sv.ended++
	sv.lastExit = LastExit{Status: e.String(), Code: e.Code(), At: e.Time, Ran: ran, Outcome: outcome.String()}
	return ending{exit: e, ran: ran, outcome: outcome, asked: asked}
}

// countEnd updates the restart counter and the backoff record after a
// daemon's or listener's run, logging the delay a crash imposes.
func (sv *service) countEnd(now time.Time, end ending) {
	if !end.asked && !sv.quitting {
		sv.restarts++
	}
	if d := sv.backoff.record(now, end.outcome, sv.conf.Backoff); d > 0 {
		sv.log.Warn().Int("crashes", sv.backoff.crashes).Stringer("delay", d).Msg("backoff")
	}
}

// tick handles every deadline that has passed.
func (sv *service) tick(now time.Time) {
	for _, inst := range sv.instances {
		if !inst.killAt.IsZero() && !inst.killed && !now.Before(inst.killAt) {
			inst.killed = true
			sv.log.Warn().Int("pid", inst.pid).Msg("killed")
			sv.signal(inst, syscall.SIGKILL)
		}
	}
	sv.custody.tick(now)
	sv.cls.tick(now)
	sv.reconcile(now)
}

// arm sets the one timer of the service to its earliest deadline: the
// next start (from next, as status shows it), SIGKILLs, custody and the
// class's own.
func (sv *service) arm(now time.Time) {
	var t time.Time
	if at, why := next(sv.plan(), now); why != noStart {
		t = at
	}
	for _, inst := range sv.instances {
		if !inst.killed {
			t = earliest(t, inst.killAt)
		}
	}
	t = earliest(t, sv.custody.deadline())
	t = earliest(t, sv.cls.deadline())
	sv.timer.Stop()
	if !t.IsZero() {
		sv.timer.Reset(t.Sub(now))
	}
}

// signal sends sig to the instance's process group (or to the process
// alone when it has no group of its own). An adopted daemon's group is
// looked up again: it may call setsid after writing its pidfile.
func (sv *service) signal(inst *instance, sig syscall.Signal) {
	inst.sent = sig
	if inst.adopted {
		inst.pgid = groupOf(inst.pid)
	}
	target := inst.pid
	if inst.pgid > 0 {
		target = -inst.pgid
	}
	sv.kill(target, sig)
}

// kill sends sig to target, logging failures other than "no such process".
func (sv *service) kill(target int, sig syscall.Signal) {
	if err := sv.sup.cfg.Signal(target, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		sv.log.Warn().Err(err).Int("pid", target).Msg("cannot signal")
	}
}

// stopInstances asks every instance to stop, with SIGKILL after the stop
// timeout, and stops what is in custody.
func (sv *service) stopInstances(now time.Time) {
	for _, inst := range sv.instances {
		if inst.asked {
			continue
		}
		inst.asked = true
		inst.killAt = now.Add(sv.sup.cfg.StopTimeout)
		if !inst.remote.valid() {
			sv.log.Info().Int("pid", inst.pid).Stringer("signal", sv.conf.Stop).Msg("stopping")
		}
		sv.signal(inst, sv.conf.Stop)
	}
	sv.cls.stopped()
	sv.custody.stop(now)
}

// quit stops the service for good: it starts nothing more, its socket is
// closed, its instances and custody are stopped, and its goroutine ends
// when nothing is left.
func (sv *service) quit(now time.Time) {
	sv.quitting = true
	sv.enabled = false
	sv.stopInstances(now)
	sv.reconcile(now)
}

// status returns a snapshot for list.
func (sv *service) status(now time.Time) Status {
	st := Status{
		Name:     sv.conf.Name,
		Class:    sv.conf.Class,
		Enabled:  sv.enabled,
		State:    sv.state.String(),
		Reason:   sv.reason,
		Restarts: sv.restarts,
		Starts:   sv.starts,
		Exits:    sv.ended,
		Crashes:  sv.backoff.crashes,
		Port:     sv.conf.Port,
		Custody:  sv.custody.pids(),
		Since:    sv.since,
	}
	if sv.startErr.err != "" {
		st.StartError, st.StartErrorAt = sv.startErr.err, sv.startErr.at
	}
	if sv.tail != nil {
		st.Output = sv.tail.lines()
	}
	for _, inst := range sv.instances {
		st.Instances = append(st.Instances, Instance{PID: inst.pid, Started: inst.started})
	}
	sortInstances(st.Instances)
	if sv.ended > 0 {
		last := sv.lastExit
		st.LastExit = &last
	}
	if at, why := next(sv.plan(), now); why != noStart && at.After(now) {
		st.NextStart, st.NextReason = at, why.String()
	}
	sv.cls.status(&st, now)
	return st
}
