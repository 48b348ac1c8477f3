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
// every change with its reason (SPEC §8).
type state uint8

const (
	stateDisabled state = iota // starts nothing; running instances carry on
	stateWaiting               // enabled, waiting for a dependency to be ready (the reason names it)
	stateIdle                  // enabled, nothing running, nothing due (listener, stream: waits for a connection)
	stateStarting              // an instance is started and not ready yet
	stateReady                 // every instance is ready
	stateBackoff               // enabled, waiting out a crash delay before the next start
	stateStopping              // instances asked to stop, or leftovers of an ended one, are being stopped
	stateDone                  // ended for good, successfully (restart policy), or removed or shut down
	stateFailed                // ended for good, unsuccessfully: retries used up, or restart policy
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
	case stateWaiting:
		return "waiting"
	case stateIdle:
		return "idle"
	case stateStarting:
		return "starting"
	case stateReady:
		return "ready"
	case stateBackoff:
		return "backoff"
	case stateStopping:
		return "stopping"
	case stateDone:
		return "done"
	case stateFailed:
		return "failed"
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

	ready    bool      // the program is ready (ready=)
	readyBy  time.Time // not ready by then: stopped, and its run is a crash; zero once ready
	late     bool      // its ready timeout passed: its end is a crash whatever its status
	quitting string    // why the program said it is going (STOPPING=1), "" if it has not
	probe    *helper   // ready=fd:, tcp:, exec: what waits for it to be ready; nil if none
	via      int       // an adopted daemon: the pid of the launcher whose readiness helper it took over

	unhealthy string // why it was stopped as unhealthy or hung: its end is a crash; "" if it was not
	health    health
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
	end      verdict    // the service ended for good by its own rules: done or failed; endNone otherwise
	deps     depView    // what the service's dependencies say, as last published
	holding  string     // shutdown: the dependants that must stop first, "" when none
	stop     stopRecord // the stop under way or the last one
	notify   *notifier  // ready=notify: the service's NOTIFY_SOCKET; nil otherwise
	said     string     // ready=notify: the last STATUS= text
	events   *mailbox[event]

	instances map[int]*instance
	group     group // the service's cgroup; nil: none
	custody   custody
	readers   []*reader // watch_output pipes still being read
	helpers   []*helper // readiness and health goroutines still running
	probeErr  string    // why the last readiness try failed, "" if none since the last ready
	unhealthy int       // instances stopped as unhealthy, hung or watchdog-expired
	healthErr string    // the last failed check, hang or watchdog expiry
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
		events:      newMailbox[event](),
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
	sv.deps = sv.sup.deps.view(sv)
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
		case <-sv.events.wake:
			now := time.Now()
			for _, ev := range sv.events.take() {
				sv.handle(ev, now)
			}
			sv.reconcile(now)
		case now := <-sv.timer.C:
			sv.tick(now)
		case <-sv.cls.wakeup():
			sv.cls.woke(time.Now())
			sv.settle(time.Now())
		}
	}
	if sv.abandoned {
		sv.stopHelpers() // the next image runs its own
	}
	sv.closeNotify()
	switch {
	case sv.abandoned:
	case sv.end.kind == endFailed: // the failure stays what it said last
		sv.set(stateFailed, "nothing left; "+sv.end.reason)
	default:
		sv.set(stateDone, "nothing left")
	}
	if !sv.abandoned {
		sv.sup.releaseGroup(sv.conf.Name, sv.group)
	}
	sv.sup.deps.gone(sv)
}

// finished reports whether the service has quit and nothing of it runs,
// or has been handed over.
func (sv *service) finished() bool {
	if sv.abandoned {
		return true
	}
	if !sv.quitting || sv.holding != "" || len(sv.instances) > 0 || !sv.custody.empty() {
		return false
	}
	sv.closeNotify() // nothing is left to notify it
	return sv.cls.idle() && sv.helpersIdle()
}

// onExit is handed to the reaper; it must not block.
func (sv *service) onExit(e initsys.Exit) { sv.exits.put(e) }

// active reports whether the class rules may start instances: enabled,
// not quitting, not ended for good.
func (sv *service) active() bool { return sv.enabled && !sv.quitting && sv.end.kind == endNone }

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
		wait:   sv.deps.wait != "",
	}
	if sv.conf.Class != conffmt.Stream {
		p.custody = !sv.custody.empty()
	}
	sv.cls.plan(&p)
	return p
}

// set records a state change and logs it at info with its reason.
// It reports whether the state itself changed.
func (sv *service) set(s state, reason string) bool {
	if sv.state == s && sv.reason == reason {
		return false
	}
	sv.log.Info().Stringer("from", sv.state).Stringer("to", s).Str("reason", reason).Msg("state")
	changed := sv.state != s
	if changed {
		sv.since = time.Now()
	}
	sv.state, sv.reason = s, reason
	return changed
}

// settle derives the state after an event: the one place that decides it.
// It then publishes what dependants and metad's own readiness need.
func (sv *service) settle(now time.Time) {
	defer sv.publish()
	p := sv.plan()
	_, why := next(p, now)
	sv.stopEnded(now)
	asked, starting := sv.counts()
	switch {
	case sv.quitting && sv.holding != "":
		sv.set(stateStopping, "stopping "+sv.holding+" first")
	case sv.quitting:
		sv.set(stateStopping, "stopping for good")
	case !sv.custody.empty() && sv.conf.Class != conffmt.Stream:
		sv.set(stateStopping, "stopping leftovers of an ended instance")
	case asked > 0 && (sv.conf.Class != conffmt.Stream || !sv.enabled):
		sv.set(stateStopping, plural(asked, "instance")+" stopping")
	case !sv.enabled:
		sv.set(stateDisabled, "disabled")
	case sv.end.kind != endNone && p.live == 0:
		if sv.set(sv.end.state(), sv.end.reason) {
			sv.reportEnd()
		}
	case p.live == 0 && sv.deps.wait != "" && sv.active():
		sv.set(stateWaiting, sv.deps.wait)
	case why != noStart && p.hold.After(now) && p.live == 0:
		sv.set(stateBackoff, "waiting out the backoff before the next start ("+why.String()+")")
	case starting > 0:
		sv.set(stateStarting, sv.startingReason())
	case sv.conf.Class == conffmt.Stream && p.open && p.live > 0:
		sv.set(stateReady, "listening, serving "+plural(p.live, "connection"))
	case sv.conf.Class == conffmt.Stream && p.open:
		sv.set(stateIdle, "listening")
	case p.live > 0:
		sv.set(stateReady, sv.readyReason())
	case sv.conf.Class == conffmt.Listener && p.open:
		sv.set(stateIdle, "waiting for a connection")
	default:
		sv.set(stateIdle, "nothing to start")
	}
}

// counts returns how many instances are asked to stop and still run, and
// how many are not ready yet (pidfile daemons still to be found count).
func (sv *service) counts() (asked, starting int) {
	for _, inst := range sv.instances {
		switch {
		case inst.asked:
			asked++
		case !inst.ready:
			starting++
		}
	}
	return asked, starting + sv.plan().live - len(sv.instances)
}

// ready reports whether the service is ready for its dependants and for
// list's READY: a daemon in state ready; a listener or stream with its
// socket open and no instance still starting.
func (sv *service) ready() bool {
	switch sv.state {
	case stateReady:
		return true
	case stateIdle:
		return sv.conf.Class != conffmt.Daemon && sv.plan().open
	}
	return false
}

// plural returns "1 instance", "2 instances".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
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
	files, started, failed, err := sv.readiness(files)
	if err != nil {
		if out != nil {
			out.closeWriters()
			out.closeReaders()
		}
		return nil, err
	}
	if sv.notify != nil {
		p.Env = append(p.Env[:len(p.Env):len(p.Env)], "NOTIFY_SOCKET="+sv.notify.addr())
	}
	if sv.conf.Watchdog > 0 {
		p.Env = append(p.Env[:len(p.Env):len(p.Env)], "WATCHDOG_USEC="+strconv.FormatInt(sv.conf.Watchdog.Microseconds(), 10))
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
		failed()
		return nil, err
	}
	inst := &instance{pid: pid, pgid: pid, sid: pid, started: now, remote: rem, launcher: sv.conf.Pidfile != ""}
	sv.instances[pid] = inst
	sv.starts++
	started(inst, now)
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
	sv.stopHealth(inst)
	end := sv.takeExit(inst, e)
	if !(inst.launcher && end.outcome == Clean && !end.asked) {
		// A launcher that daemonized leaves its daemon behind on purpose,
		// and the daemon may be the one to say it is ready.
		sv.custody.add(inst, e.Time)
		inst.probe.cancel()
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
	if inst.late || inst.unhealthy != "" {
		outcome, asked = Crashed, false // stopped for not being ready in time, or hung
	}
	if sv.stop.active && inst.killed {
		sv.stop.killed = true
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
// daemon's or listener's run, applies the restart policy, and logs the
// delay a crash imposes on the next start, if one is to come.
func (sv *service) countEnd(now time.Time, end ending) {
	if !end.asked && !sv.quitting {
		sv.restarts++
	}
	d := sv.backoff.record(now, end.outcome, sv.conf.Backoff)
	sv.policy(end)
	if d > 0 && sv.end.kind == endNone {
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
	sv.lateInstances(now)
	sv.healthTick(now)
	sv.cls.tick(now)
	sv.reconcile(now)
}

// arm sets the one timer of the service to its earliest deadline: the
// next start (from next, as status shows it), SIGKILLs, custody and the
// class's own.
func (sv *service) arm(now time.Time) {
	var t time.Time
	p := sv.plan()
	if at, why := next(p, now); why != noStart {
		t = at
	}
	if p.hold.After(now) {
		t = earliest(t, p.hold) // the end of a backoff changes the state
	}
	for _, inst := range sv.instances {
		if !inst.killed {
			t = earliest(t, inst.killAt)
		}
	}
	t = earliest(t, sv.custody.deadline())
	t = earliest(t, sv.readyDeadline())
	t = earliest(t, sv.healthDeadline())
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

// stopTimeout is the grace between the service's stop signal and SIGKILL.
func (sv *service) stopTimeout() time.Duration {
	if sv.conf.StopTimeout > 0 {
		return sv.conf.StopTimeout
	}
	return sv.sup.cfg.StopTimeout
}

// stopInstance asks one instance to stop with sig, with SIGKILL after the
// stop timeout.
func (sv *service) stopInstance(inst *instance, now time.Time, sig syscall.Signal) {
	if !sv.stop.active {
		sv.stop = stopRecord{active: true, from: now, last: sv.stop.last}
	}
	inst.asked = true
	inst.killAt = now.Add(sv.stopTimeout())
	if !inst.remote.valid() {
		sv.log.Info().Int("pid", inst.pid).Stringer("signal", sig).Msg("stopping")
	}
	sv.signal(inst, sig)
}

// stopInstances asks every instance to stop, with SIGKILL after the stop
// timeout, and stops what is in custody.
func (sv *service) stopInstances(now time.Time) {
	for _, inst := range sv.instances {
		if !inst.asked {
			sv.stopInstance(inst, now, sv.conf.Stop)
		}
	}
	sv.cls.stopped()
	sv.custody.stop(now)
}

// quit stops the service for good: it starts nothing more, its socket is
// closed, its instances and custody are stopped, and its goroutine ends
// when nothing is left. With ordered (shutdown), its instances are stopped
// only once the services that depend on it run nothing (SPEC §8).
func (sv *service) quit(now time.Time, ordered bool) {
	sv.quitting = true
	sv.enabled = false
	if ordered {
		sv.holding = sv.sup.deps.holding(sv)
	}
	if sv.holding == "" {
		sv.stopInstances(now)
	} else {
		sv.log.Info().Str("dependants", sv.holding).Msg("stopping dependants first")
	}
	sv.reconcile(now)
}

// stopRecord is the stop under way (active) and the last one that ended.
type stopRecord struct {
	active bool
	from   time.Time // when the first instance of it was asked to stop
	killed bool      // SIGKILL was needed
	last   *LastStop
}

// stopEnded closes the stop under way once nothing asked to stop runs.
func (sv *service) stopEnded(now time.Time) {
	if !sv.stop.active || !sv.custody.empty() {
		return
	}
	for _, inst := range sv.instances {
		if inst.asked {
			return
		}
	}
	sv.stop.active = false
	sv.stop.last = &LastStop{At: now, Took: now.Sub(sv.stop.from), Killed: sv.stop.killed}
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

		Ready:        sv.ready(),
		Notify:       sv.said,
		ReadyTimeout: sv.conf.ReadyTimeout,
		StopTimeout:  sv.stopTimeout(),
		LastStop:     sv.stop.last,
	}
	sv.healthStatus(&st)
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
