package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"metad/conffmt"
	"metad/init"
)

// Procs starts processes and reports their exits. *initsys.Reaper
// implements it; tests use a fake.
type Procs interface {
	// Spawn starts p; done is called once, without blocking, when it ends.
	Spawn(p *initsys.Proc, done func(initsys.Exit)) (int, error)
	// Adopt follows a process metad did not start itself.
	Adopt(pid int, done func(initsys.Exit)) error
}

// Config is what a Supervisor needs from its owner.
type Config struct {
	Log   zerolog.Logger
	Procs Procs
	// Signal sends sig to pid (a negative pid is a process group).
	// nil means kill(2).
	Signal func(pid int, sig syscall.Signal) error
	// StopTimeout is the grace between the stop signal and SIGKILL.
	StopTimeout time.Duration
	// Env is the base environment of every instance; nil means os.Environ().
	Env []string
	// Inherited are listening sockets metad was given; services whose
	// endpoint matches use them instead of binding. May be nil.
	Inherited *Inherited
	// Custody finds what ended instances left behind; nil means the
	// sessions of /proc.
	Custody CustodySource
	// CallTimeout bounds every request to a service's goroutine; zero
	// means DefaultCallTimeout.
	CallTimeout time.Duration
	// Cgroups, if not nil, gives each service a cgroup of its own in it
	// (SPEC §9): its instances start in it, and custody covers every
	// process in it, those that called setsid included. A service's
	// cgroup is removed once the service is removed or shut down and it
	// is empty; one of a service that is not loaded is emptied and
	// removed at the first Load or Restore. A handover leaves them to
	// the next image. The Supervisor does not remove Cgroups itself: its
	// owner does, once Shutdown has returned. nil: custody by session
	// only.
	Cgroups *initsys.Cgroups
	// Ended, if not nil, is told when a service ends for good by its own
	// rules (it becomes done or failed: restart=, retries=), from the
	// service's goroutine: it must not block.
	Ended func(End)
	// Changed, if not nil, is called after any service published a change
	// of its state (see Readiness); it must not block.
	Changed func()
	// Probe runs a readiness or health probe; nil means the real ones
	// (package probe). Tests replace it.
	Probe func(ctx context.Context, p conffmt.Probe, proc initsys.Proc) error
}

// End is a service's end for good (SPEC §8).
type End struct {
	Service string
	Failed  bool           // failed; otherwise done
	Code    int            // its last exit status, as a shell reports it (128+N for signal N)
	Action  conffmt.Action // the service's on_failure= or on_success=
	Reason  string
}

// DefaultCallTimeout bounds a request to a service's goroutine. A service
// answers within microseconds unless it is stuck, which is a bug; the
// caller then gets an error naming it instead of hanging.
const DefaultCallTimeout = 10 * time.Second

// Status is a snapshot of one service, for list and status.
type Status struct {
	Name         string
	Class        conffmt.Class
	Enabled      bool
	State        string     // disabled, idle, running, backoff, stopping, done: see metad(8)
	Reason       string     // why the service is in its state
	Instances    []Instance // by start time
	Restarts     int        // instances that ended without being asked to (stream: those that failed)
	Starts       int        // instances started, by any rule or request
	Exits        int        // instances that ended, for any reason
	LastExit     *LastExit  // how the last instance ended; nil before the first end
	Since        time.Time  // when the service entered its state
	StartError   string     // the error of the last start that failed; "" if none has
	StartErrorAt time.Time  // when it failed
	Output       []string   // watch_output: the last lines the instances wrote (at most 64 KiB)
	Crashes      int        // crashes in a row counting toward the service's backoff
	NextStart    time.Time  // next automatic start when one is scheduled; zero otherwise
	NextReason   string     // why NextStart: min, period, connection, listen
	Port         int        // listener and stream
	Held         int        // stream: slots held by crashes
	Custody      []int      // processes left by ended instances, being stopped

	Ready        bool          // the service is ready: state ready (daemon, listener) or listening (stream)
	Notify       string        // ready=notify: the last STATUS= text the program sent; "" if none
	ReadyTimeout time.Duration // how long a start may take to become ready
	StopTimeout  time.Duration // how long a stop may take before SIGKILL
	LastStop     *LastStop     // the last stop of every instance; nil before the first

	Health      string // "" (no check), "unknown" (not checked yet), "healthy" or "unhealthy"
	HealthError string // the last failed check, hang or watchdog expiry; "" if none
	CheckFails  int    // consecutive failed checks of the current instance
	Unhealthy   int    // instances stopped as unhealthy, hung or watchdog-expired

	Refused Refused // stream: connections closed by admission, by rule
}

// LastStop is how the last stop request ended: the instances stopped on
// their stop signal, or were killed after the stop timeout.
type LastStop struct {
	At     time.Time     `json:"at"`     // when the last instance of it ended
	Took   time.Duration `json:"took"`   // from the stop signal to the end of the last instance
	Killed bool          `json:"killed"` // SIGKILL was needed
}

// Refused counts the connections stream admission closed, by rule.
type Refused struct {
	PerSource int `json:"per_source"` // the client address had per_source instances
	Rate      int `json:"rate"`       // the client address was over its rate
	OnlyFrom  int `json:"only_from"`  // the client address is not in only_from
}

// LastExit is how an instance ended.
type LastExit struct {
	Status  string        `json:"status"`  // as metad logs it: "exit status 1", "signal 9 (killed)"
	Code    int           `json:"code"`    // as a shell reports it: the exit status, or 128+N for signal N
	At      time.Time     `json:"at"`      // when it ended
	Ran     time.Duration `json:"ran"`     // how long it ran
	Outcome string        `json:"outcome"` // clean, crashed, failed or peer-gone (see metad(8))
}

// Instance is one running process of a service.
type Instance struct {
	PID     int
	Started time.Time
}

// ErrUnknownService is returned for a name that is not in the config.
var ErrUnknownService = errors.New("unknown service")

// ErrAtMax is returned by Start when the service already runs max instances.
var ErrAtMax = errors.New("already running its maximum of instances")

// ErrClosed is returned by Load, Start, Enable and Restart once Shutdown
// has begun: nothing may start that the shutdown would not stop.
var ErrClosed = errors.New("metad is shutting down")

// Supervisor runs a set of services. Its methods are safe for concurrent
// use; each service's state is owned by that service's goroutine, and
// every request to one is bounded by Config.CallTimeout.
type Supervisor struct {
	cfg     Config
	sockets sockets

	stdin, stdout, stderr int // descriptors instances get when not told otherwise

	shim      string     // metad's own binary, for the listener shim
	inherited *Inherited // listening sockets handed to metad at start

	mu       sync.Mutex // guards the fields below (the sets, not the services' state)
	closed   bool       // Shutdown has begun
	services map[string]*service
	order    []*service
	leaving  []*service           // removed by a reload, still stopping
	cgroups  map[string]*groupRef // services' cgroups by name
	swept    bool                 // cgroups of services not loaded were looked for
	wg       sync.WaitGroup

	groups groups // makes the services' cgroups; nil: none

	deps  *depTable
	probe func(ctx context.Context, p conffmt.Probe, proc initsys.Proc) error
}

// New returns a Supervisor with no services. It opens /dev/null for the
// standard input of instances; when that is impossible (a bare root
// filesystem) instances get a pipe that is already at end of file.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Signal == nil {
		cfg.Signal = syscall.Kill
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.Custody == nil {
		cfg.Custody = procSessions{}
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	stdin, err := emptyInput()
	if err != nil {
		return nil, err
	}
	shim, err := os.Executable()
	if err != nil {
		shim = os.Args[0]
	}
	return &Supervisor{
		shim:      shim,
		inherited: cfg.Inherited,
		cfg:       cfg,
		sockets:   netSockets{},
		stdin:     stdin,
		stdout:    1,
		stderr:    2,
		services:  make(map[string]*service),
		cgroups:   make(map[string]*groupRef),
		groups:    groupsOf(cfg.Cgroups),
		deps:      newDepTable(cfg.Changed),
		probe:     probeFunc(cfg),
	}, nil
}

// emptyInput returns a descriptor that reads as end of file, kept open for
// the life of metad.
func emptyInput() (int, error) {
	if fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0); err == nil {
		return fd, nil
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return -1, fmt.Errorf("cannot open %s or a pipe: %w", os.DevNull, err)
	}
	syscall.Close(p[1])
	return p[0], nil
}

// Load adds services and starts their goroutines. Names must not already
// be loaded (conffmt guarantees uniqueness within one file). It returns
// ErrClosed once Shutdown has begun.
func (s *Supervisor) Load(svcs []conffmt.Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for _, c := range svcs {
		if _, ok := s.services[c.Name]; ok {
			return fmt.Errorf("cannot load service %q: already loaded", c.Name)
		}
	}
	for _, c := range svcs {
		sv := newService(s, c)
		s.deps.add(sv)
		s.services[c.Name] = sv
		s.order = append(s.order, sv)
		s.launch(sv)
	}
	s.sweepGroups()
	return nil
}

// launch starts sv's goroutine. s.mu must be held.
func (s *Supervisor) launch(sv *service) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sv.run()
	}()
}

// lookup returns the named services, or an error naming the first unknown.
// With open, it returns ErrClosed once Shutdown has begun.
func (s *Supervisor) lookup(names []string, open bool) ([]*service, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if open && s.closed {
		return nil, ErrClosed
	}
	out := make([]*service, 0, len(names))
	for _, n := range names {
		sv, ok := s.services[n]
		if !ok {
			return nil, fmt.Errorf("%w %q", ErrUnknownService, n)
		}
		out = append(out, sv)
	}
	return out, nil
}

// errGone is returned for a request to a service whose goroutine has ended.
var errGone = errors.New("service is gone")

// ask runs f in sv's goroutine and returns its result, or an error naming
// the service when the goroutine has ended or does not take or finish
// the request within d. f must not block. A request given up on may
// still run later; its result is then dropped.
func ask[T any](sv *service, d time.Duration, f func(now time.Time) T) (T, error) {
	var zero T
	res := make(chan T, 1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case sv.reqs <- func() { res <- f(time.Now()) }:
	case <-sv.done:
		return zero, fmt.Errorf("cannot reach service %q: %w", sv.conf.Name, errGone)
	case <-t.C:
		return zero, fmt.Errorf("cannot reach service %q: no answer in %v", sv.conf.Name, d)
	}
	select {
	case r := <-res:
		return r, nil
	case <-t.C:
		return zero, fmt.Errorf("cannot reach service %q: no answer in %v", sv.conf.Name, d)
	}
}

// each runs f in the goroutine of every named service, after checking
// that all names exist (and, with open, that Shutdown has not begun).
func (s *Supervisor) each(names []string, open bool, f func(sv *service, now time.Time) error) error {
	svcs, err := s.lookup(names, open)
	if err != nil {
		return err
	}
	var errs []error
	for _, sv := range svcs {
		ferr, err := ask(sv, s.cfg.CallTimeout, func(now time.Time) error { return f(sv, now) })
		if err != nil {
			errs = append(errs, err)
		} else if ferr != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", sv.conf.Name, ferr))
		}
	}
	return errors.Join(errs...)
}

// Enable lets the class rules start instances again. It returns ErrClosed
// once Shutdown has begun.
func (s *Supervisor) Enable(names ...string) error {
	return s.each(names, true, func(sv *service, now time.Time) error {
		if err := sv.admits(); err != nil {
			return err
		}
		sv.enabled = true
		sv.again()
		sv.reconcile(now)
		return nil
	})
}

// admits says whether a request that may start instances is served:
// ErrClosed once the service quits (removed, or shutting down).
func (sv *service) admits() error {
	if sv.quitting {
		return ErrClosed
	}
	return nil
}

// Disable stops automatic starts; running instances carry on.
func (s *Supervisor) Disable(names ...string) error {
	return s.each(names, false, func(sv *service, now time.Time) error {
		sv.enabled = false
		sv.reconcile(now)
		return nil
	})
}

// Start starts one instance now if fewer than max run, overriding and
// resetting the backoff. A disabled service runs that one instance but is
// not restarted when it ends. It returns ErrClosed once Shutdown has
// begun.
func (s *Supervisor) Start(name string) error {
	return s.each([]string{name}, true, func(sv *service, now time.Time) error {
		if err := sv.admits(); err != nil {
			return err
		}
		switch {
		case sv.state == stateStopping:
			return errors.New("instances or their leftovers are still being stopped")
		case sv.conf.Class == conffmt.Stream:
			return errors.New("a stream service starts on connections only")
		case sv.plan().live >= sv.conf.Max:
			return ErrAtMax
		}
		sv.again()
		sv.backoff.reset()
		why := forMin
		if sv.conf.Class == conffmt.Listener {
			if sv.plan().open {
				why = forConn
			} else if err := sv.cls.start(now, forListen); err != nil {
				return err
			}
		}
		err := sv.cls.start(now, why)
		sv.settle(now)
		return err
	})
}

// Stop disables the services and stops their instances: the stop signal,
// then SIGKILL after the stop timeout.
func (s *Supervisor) Stop(names ...string) error {
	return s.each(names, false, func(sv *service, now time.Time) error {
		sv.enabled = false
		sv.stopInstances(now)
		sv.reconcile(now)
		return nil
	})
}

// Restart stops the instances; the class rules start new ones. It
// returns ErrClosed once Shutdown has begun.
func (s *Supervisor) Restart(names ...string) error {
	return s.each(names, true, func(sv *service, now time.Time) error {
		sv.stopInstances(now)
		sv.settle(now)
		return nil
	})
}

// Kill sends sig to every instance of the service. Instances that die of
// it are not counted as crashes.
func (s *Supervisor) Kill(name string, sig syscall.Signal) error {
	return s.each([]string{name}, false, func(sv *service, now time.Time) error {
		for _, inst := range sv.instances {
			sv.signal(inst, sig)
		}
		return nil
	})
}

// List returns the status of the named services, or of all in config
// order when no name is given. A service that does not answer in time is
// left out.
func (s *Supervisor) List(names ...string) ([]Status, error) {
	var svcs []*service
	if len(names) == 0 {
		s.mu.Lock()
		svcs = slices.Clone(s.order)
		s.mu.Unlock()
	} else {
		var err error
		if svcs, err = s.lookup(names, false); err != nil {
			return nil, err
		}
	}
	out := make([]Status, 0, len(svcs))
	for _, sv := range svcs {
		st, err := ask(sv, s.cfg.CallTimeout, sv.status)
		if err != nil {
			continue
		}
		out = append(out, st)
	}
	return out, nil
}

// Shutdown stops every service: each instance and everything in custody
// gets its stop signal, and SIGKILL after the stop timeout. From its
// start on, Load, Start, Enable and Restart return ErrClosed and Reload
// changes nothing. It returns when every service has ended, or when ctx
// ends first, with an error naming the services still running.
func (s *Supervisor) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	svcs := slices.Clone(s.order)
	svcs = append(svcs, s.leaving...)
	s.mu.Unlock()
	// Every service is told at once, so that a stuck one delays none of
	// the others; each request is bounded by the call timeout and ctx.
	d := s.cfg.CallTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, max(time.Until(dl), time.Millisecond))
	}
	told := make(chan error, len(svcs))
	for _, sv := range svcs {
		go func() {
			_, err := ask(sv, d, func(now time.Time) struct{} { sv.quit(now, true); return struct{}{} })
			told <- err
		}()
	}
	var errs []error
	for range svcs {
		if err := <-told; err != nil && !errors.Is(err, errGone) {
			errs = append(errs, err)
		}
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return errors.Join(errs...)
	case <-ctx.Done():
	}
	var stuck []string
	for _, sv := range svcs {
		select {
		case <-sv.done:
		default:
			stuck = append(stuck, fmt.Sprintf("%q", sv.conf.Name))
		}
	}
	return fmt.Errorf("cannot stop services %s: %w", strings.Join(stuck, ", "), ctx.Err())
}

func sortInstances(in []Instance) {
	slices.SortFunc(in, func(a, b Instance) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return a.PID - b.PID
	})
}

// startError is a start that failed: its error and when.
type startError struct {
	err string
	at  time.Time
}
