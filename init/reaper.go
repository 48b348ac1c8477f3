package initsys

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// ErrNotChild is returned by Adopt for a pid that is not metad's child and
// whose exit is not among the recent unknown ones.
var ErrNotChild = errors.New("not a child of metad")

// recentExits is how many exits of unknown children the reaper keeps for
// Adopt: enough for the pidfiles read in one burst of daemon starts.
const recentExits = 64

// A Reaper starts metad's children and reaps every child of metad, its own
// and adopted orphans. There is one per process, living as long as metad:
// two reapers would take each other's exits. Its methods are safe for
// concurrent use.
//
// It does not take SIGCHLD. A helper goroutine blocks in waitid(2) with
// WNOWAIT until some child has ended, without reaping it, and wakes Run,
// which reaps; the kernel wakes that one thread directly, where a signal
// would interrupt a thread, wake os/signal's goroutine and then Run's. This
// halved the thread switches per connection of a stream service. waitid
// has nothing to wait for while metad has no child at all; then a spawn or
// an adoption sends the helper back to waitid, and Run looks again every
// second for an orphan that joined metad's PID namespace from outside and
// was re-parented to it (a `docker exec` whose parent went away), the one
// way a child can appear without either.
type Reaper struct {
	log      zerolog.Logger
	recheck  time.Duration // childlessRecheck; tests that must see every wake-up set it longer
	patience time.Duration // pausePatience; tests set it shorter
	poke     chan struct{} // asks Run for a pass; see WaitIdle
	ended    chan struct{} // from watch: a child has ended
	more     chan struct{} // to watch: a pass is done, wait for the next end

	// waitMu orders registration against reaping. Spawn and Adopt hold it
	// shared from before the fork (or the parentage check) until the pid
	// is in owners; a pass holds it exclusively around each wait4 and the
	// lookup of its pid. So wait4 never returns a pid whose owner is still
	// being registered, and never takes the child of a failed exec, which
	// syscall.ForkExec waits for itself. Spawns still overlap each other;
	// an exec that hangs (a dead network file system) delays reaping.
	waitMu sync.RWMutex

	mu        sync.Mutex         // guards the fields below; never held across a syscall
	owners    map[int]func(Exit) // registered children not yet reaped; never a nil func
	recent    []Exit             // exits of unknown children, oldest first
	orphans   uint64             // unknown children reaped so far
	started   uint64             // passes started
	last      uint64             // the last pass finished
	empty     bool               // the last pass finished with ECHILD: no child at all
	passed    chan struct{}      // closed and replaced when a pass finishes
	added     uint64             // children registered so far
	childless bool               // watch is idle, with no child to watch: a registration must send it back

	// The exit being delivered, if any: its callback runs on Run's
	// goroutine outside waitMu, so that a slow or stuck one delays
	// neither Spawn nor Adopt, and Pause waits for it, up to
	// pausePatience.
	delivering Exit          // PID 0: none
	delivered  chan struct{} // made by a waiter, closed when the delivery ends
}

// pausePatience bounds how long Pause waits for an exit callback that
// has not returned: callbacks must not block, so one that takes this
// long is stuck, and is logged.
const pausePatience = 5 * time.Second

// childlessRecheck is how often Run looks for children while it has none
// (see Reaper).
const childlessRecheck = time.Second

// NewReaper returns a reaper that logs to log. Call it before the first
// child starts.
func NewReaper(log zerolog.Logger) *Reaper {
	r := &Reaper{
		log:      log,
		recheck:  childlessRecheck,
		patience: pausePatience,
		poke:     make(chan struct{}, 1),
		ended:    make(chan struct{}, 1),
		more:     make(chan struct{}, 1),
		owners:   make(map[int]func(Exit)),
		passed:   make(chan struct{}),
	}
	DefaultReserved()
	return r
}

// Run is the only caller of wait4 in metad. It reaps every child that has
// ended, then again whenever one ends (each pass calls wait4 until nothing
// is left), and blocks until ctx is done. Call it once. Exit callbacks are
// called from Run's goroutine, outside any lock.
func (r *Reaper) Run(ctx context.Context) {
	stop := make(chan struct{})
	defer close(stop) // watch returns after its current wait
	go r.watch(stop)
	recheck := time.NewTimer(r.recheck)
	defer recheck.Stop()
	for {
		if r.pass() {
			recheck.Reset(r.recheck)
		} else {
			recheck.Stop()
			nudge(r.more) // unless watch has its go-ahead already
		}
		select {
		case <-ctx.Done():
			return
		case <-r.ended:
		case <-r.poke:
		case <-recheck.C:
		}
	}
}

// watch waits, at each go-ahead (from Run, or from a registration while
// metad had no child), until some child has ended, and tells Run. WNOWAIT
// leaves the child for Run's pass to reap, under waitMu.
func (r *Reaper) watch(stop <-chan struct{}) {
	for {
		select {
		case <-r.more:
		case <-stop:
			return
		}
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOWAIT, nil)
		for errors.Is(err, unix.EINTR) {
			err = unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOWAIT, nil)
		}
		// An error (ECHILD: the last child was reaped meanwhile) is for
		// the pass to find out too.
		nudge(r.ended)
	}
}

// nudge sends on ch, a channel of one slot, without blocking: a wake-up
// already pending stands for this one.
func nudge(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// register makes done the owner of pid. r.mu must be held. It reports
// whether watch must be sent back to waitid: Run left it idle, with no
// child to watch. (A pass under way when pid was added gives it the
// go-ahead itself: see pass.)
func (r *Reaper) register(pid int, done func(Exit)) (wake bool) {
	r.owners[pid] = orNop(done)
	r.forget(pid) // an older process's exit under the same pid
	r.added++
	wake, r.childless = r.childless, false
	return wake
}

// pass reaps until wait4 says that no child has ended (or none is left),
// calling each exit's owner, and then wakes WaitIdle.
//
// It reports whether metad has no child left and none was registered
// during the pass: watch has nothing to wait for.
func (r *Reaper) pass() (childless bool) {
	r.mu.Lock()
	r.started++
	n, added := r.started, r.added
	r.mu.Unlock()

	var empty bool
	for {
		e, err := r.reapOne()
		if err != nil {
			empty = errors.Is(err, unix.ECHILD)
			if !empty {
				r.log.Error().Err(err).Msg("cannot reap children")
			}
			break
		}
		if e.PID == 0 {
			break // children left, none ended
		}
	}

	r.mu.Lock()
	if empty && len(r.owners) > 0 {
		// Someone else called wait: these exits are lost for good.
		r.log.Error().Int("lost", len(r.owners)).Msg("registered children were reaped elsewhere")
	}
	r.last, r.empty = n, empty
	r.childless = empty && r.added == added
	childless = r.childless
	close(r.passed)
	r.passed = make(chan struct{})
	r.mu.Unlock()
	return childless
}

// reapOne reaps one child if one has ended and delivers its exit to its
// owner. An unknown child is counted and remembered for Adopt. A zero PID
// means that children are left but none has ended.
func (r *Reaper) reapOne() (Exit, error) {
	e, done, err := r.reap()
	if err != nil || e.PID == 0 {
		return e, err
	}
	if done == nil {
		r.log.Debug().Int("pid", e.PID).Stringer("status", e).Msg("reaped orphan")
		return e, nil
	}
	done(e)
	r.mu.Lock()
	r.delivering = Exit{}
	if r.delivered != nil {
		close(r.delivered)
		r.delivered = nil
	}
	r.mu.Unlock()
	return e, nil
}

// reap reaps one child under waitMu, and returns its exit and its owner,
// marked as being delivered (see Pause), or nil for an unknown child.
func (r *Reaper) reap() (Exit, func(Exit), error) {
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	var ws unix.WaitStatus
	pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
	for errors.Is(err, unix.EINTR) {
		pid, err = unix.Wait4(-1, &ws, unix.WNOHANG, nil)
	}
	if err != nil || pid <= 0 {
		return Exit{}, nil, err
	}
	e := Exit{PID: pid, Status: ws, Time: time.Now()}

	r.mu.Lock()
	defer r.mu.Unlock()
	done, ok := r.owners[pid]
	if !ok {
		r.orphans++
		r.remember(e)
		return e, nil, nil
	}
	delete(r.owners, pid)
	r.delivering = e
	return e, done, nil
}

// Pause stops reaping and starting until the returned function is called:
// for handing metad's children over to a new image of metad (re-exec),
// whose reaper must find every child that has not been delivered yet
// still unreaped. Every exit reaped before Pause returns has been
// delivered to its owner, unless its callback has not returned after
// pausePatience: Pause logs that one and returns without it. Spawn and
// Adopt block while paused: the caller must make sure that nothing it
// waits for calls them.
func (r *Reaper) Pause() (resume func()) {
	r.waitMu.Lock()
	r.mu.Lock()
	e := r.delivering
	if e.PID != 0 && r.delivered == nil {
		r.delivered = make(chan struct{})
	}
	delivered := r.delivered
	r.mu.Unlock()
	if e.PID != 0 {
		t := time.NewTimer(r.patience)
		select {
		case <-delivered:
		case <-t.C:
			r.log.Error().Int("pid", e.PID).Stringer("status", e).Dur("waited", r.patience).Msg("exit callback stuck: pausing without it")
		}
		t.Stop()
	}
	return r.waitMu.Unlock
}

// remember adds the exit of an unknown child to the recent ones, dropping
// the oldest beyond recentExits. r.mu must be held.
func (r *Reaper) remember(e Exit) {
	r.forget(e.PID)
	if len(r.recent) == recentExits {
		r.recent = append(r.recent[:0], r.recent[1:]...)
	}
	r.recent = append(r.recent, e)
}

// forget removes and returns the recent exit of pid, if any. r.mu must be
// held.
func (r *Reaper) forget(pid int) (Exit, bool) {
	for i, e := range r.recent {
		if e.PID == pid {
			r.recent = append(r.recent[:i], r.recent[i+1:]...)
			return e, true
		}
	}
	return Exit{}, false
}

// Spawn starts p and registers its pid in one step, under the lock the
// reaper takes around wait4, so that an exit can never be reaped before its
// owner is known. done (if not nil) is called exactly once, from Run's
// goroutine, outside any lock, with the exit; it must not block: Run
// reaps nothing until it returns (it may call Spawn and Adopt, though,
// but not while Pause holds the reaper). Spawn returns once the
// program has been executed (it does not wait for it); an exec failure
// (ENOENT, EACCES, ENOEXEC...) is returned as an error that wraps the
// errno. Spawn is safe for concurrent use.
func (r *Reaper) Spawn(p *Proc, done func(Exit)) (pid int, err error) {
	what := strconv.Quote(p.Path)
	if p.Cgroup != nil {
		what += " in cgroup " + strconv.Quote(p.Cgroup.dir)
	}
	attr, err := p.attr()
	if err != nil {
		return 0, fmt.Errorf("cannot start %s: %w", what, err)
	}
	pid, err = r.forkExec(p.Path, p.Argv, attr, p.Signals, done)
	if err != nil {
		return 0, fmt.Errorf("cannot start %s: %w", what, err)
	}
	return pid, nil
}

// start is Spawn for any process attributes (tests use namespaces).
func (r *Reaper) start(path string, argv []string, attr *syscall.ProcAttr, done func(Exit)) (int, error) {
	pid, err := r.forkExec(path, argv, attr, nil, done)
	if err != nil {
		return 0, fmt.Errorf("cannot start %q: %w", path, err)
	}
	return pid, nil
}

// forkExec starts a process with the signal state sigs (nil: the
// defaults) and registers it under waitMu.
func (r *Reaper) forkExec(path string, argv []string, attr *syscall.ProcAttr, sigs *SignalState, done func(Exit)) (int, error) {
	r.waitMu.RLock()
	defer r.waitMu.RUnlock()
	pid, err := forkExecState(path, argv, attr, sigs)
	if err != nil && pid == 0 {
		return 0, err
	}
	if err != nil {
		done = nil // a failed shim: reap it, report nothing
	}
	r.mu.Lock()
	wake := r.register(pid, done)
	r.mu.Unlock()
	if wake {
		nudge(r.more)
	}
	if err != nil {
		return 0, err
	}
	return pid, nil
}

// orNop returns done, or for nil a callback that does nothing: a nil
// owner would read as an unknown child.
func orNop(done func(Exit)) func(Exit) {
	if done == nil {
		return func(Exit) {}
	}
	return done
}

// Adopt registers pid, a process metad did not start: a daemon that
// double-forked and wrote a pidfile, and that the kernel re-parented to
// metad (the subreaper) when its parent exited. Call it after the process
// that started the daemon has exited: only then is the daemon metad's child.
//
// If pid is metad's child, alive or not yet reaped, done will be called
// from Run's goroutine as for Spawn. If it was already reaped as an unknown
// child (one of the latest 64), done is called at once, from Adopt's
// caller, with that exit; its Time tells when it was reaped, in case the
// caller must rule out an older process that had the same pid. Otherwise
// Adopt returns ErrNotChild, wrapped. done must not block. Adopt is safe
// for concurrent use.
func (r *Reaper) Adopt(pid int, done func(Exit)) error {
	if pid <= 0 {
		return fmt.Errorf("cannot adopt process %d: %w", pid, ErrNotChild)
	}
	e, reaped, err := r.adopt(pid, done)
	if err != nil {
		return fmt.Errorf("cannot adopt process %d: %w", pid, err)
	}
	if reaped && done != nil {
		done(e)
	}
	return nil
}

// adopt registers pid if it is a child, or else takes its recent exit.
func (r *Reaper) adopt(pid int, done func(Exit)) (Exit, bool, error) {
	r.waitMu.RLock()
	defer r.waitMu.RUnlock()
	// Is pid our child, alive or a zombie? WNOWAIT: look, do not reap.
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	for errors.Is(err, unix.EINTR) {
		err = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	}
	if err != nil && !errors.Is(err, unix.ECHILD) {
		return Exit{}, false, err
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		if _, ok := r.owners[pid]; ok {
			return Exit{}, false, errors.New("already registered")
		}
		if r.register(pid, done) {
			nudge(r.more)
		}
		return Exit{}, false, nil
	}
	if e, ok := r.forget(pid); ok {
		return e, true, nil
	}
	return Exit{}, false, ErrNotChild
}

// Orphans returns how many unknown children (re-parented orphans) have
// been reaped so far.
func (r *Reaper) Orphans() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphans
}

// Running returns how many registered children have not been reaped yet.
func (r *Reaper) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.owners)
}

// WaitIdle blocks until wait4 reports that metad has no child at all
// (ECHILD) in a pass that began after the call, or until ctx is done, and
// returns ctx's error then. It needs Run to be running. It is for the end
// of a shutdown: a child started meanwhile makes it wait for that one too,
// unless the pass that found none came first.
func (r *Reaper) WaitIdle(ctx context.Context) error {
	r.mu.Lock()
	after := r.started
	r.mu.Unlock()
	nudge(r.poke)
	for {
		r.mu.Lock()
		last, empty, passed := r.last, r.empty, r.passed
		r.mu.Unlock()
		if last > after && empty {
			return nil
		}
		select {
		case <-passed:
		case <-ctx.Done():
			return r.stuck(ctx.Err())
		}
	}
}

// stuck adds to err the exit whose callback has not returned, if any.
func (r *Reaper) stuck(err error) error {
	r.mu.Lock()
	e := r.delivering
	r.mu.Unlock()
	if e.PID == 0 {
		return err
	}
	return fmt.Errorf("%w (the exit callback of process %d, reaped %v ago, has not returned)", err, e.PID, time.Since(e.Time).Round(time.Millisecond))
}

// Drain ends every other process in metad's PID namespace, for the end of
// a shutdown as PID 1, once the services have been stopped: it sends
// SIGTERM (and SIGCONT, so that stopped processes see it) to all, waits
// until no child is left or grace has passed, then sends SIGKILL to all
// and waits until no child is left or ctx is done. It returns ctx's error,
// or KillAll's (so, outside PID 1, an error at once). It needs Run to be
// running.
func (r *Reaper) Drain(ctx context.Context, grace time.Duration) error {
	if err := KillAll(syscall.SIGTERM); err != nil {
		return err
	}
	if err := KillAll(syscall.SIGCONT); err != nil {
		return err
	}
	graceCtx, cancel := context.WithTimeout(ctx, grace)
	err := r.WaitIdle(graceCtx)
	cancel()
	if err == nil {
		return nil
	}
	r.log.Warn().Dur("grace", grace).Msg("processes left after SIGTERM, sending SIGKILL")
	if err := KillAll(syscall.SIGKILL); err != nil {
		return err
	}
	return r.WaitIdle(ctx)
}
