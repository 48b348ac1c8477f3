package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
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
}

// Status is a snapshot of one service, for list.
type Status struct {
	Name      string
	Class     conffmt.Class
	Enabled   bool
	State     string
	Instances []Instance // by start time
	Restarts  int        // instances that ended without being asked to
	Crashes   int        // crashes in a row
	NextStart time.Time  // next automatic start when one is scheduled; zero otherwise
	Port      int        // listener and stream
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

// Supervisor runs a set of services. Its methods are safe for concurrent
// use; each service's state is owned by that service's goroutine.
type Supervisor struct {
	cfg Config

	stdin, stdout, stderr int // descriptors instances get when not told otherwise

	shim      string     // metad's own binary, for the listener shim
	inherited *Inherited // listening sockets handed to metad at start

	mu       sync.Mutex // guards services, order and leaving (the sets, not their state)
	services map[string]*service
	order    []*service
	leaving  []*service // removed by a reload, still stopping
	wg       sync.WaitGroup
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
		stdin:     stdin,
		stdout:    1,
		stderr:    2,
		services:  make(map[string]*service),
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
// be loaded (conffmt guarantees uniqueness within one file).
func (s *Supervisor) Load(svcs []conffmt.Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range svcs {
		if _, ok := s.services[c.Name]; ok {
			return fmt.Errorf("cannot load service %q: already loaded", c.Name)
		}
	}
	for _, c := range svcs {
		sv := newService(s, c)
		s.services[c.Name] = sv
		s.order = append(s.order, sv)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			sv.run()
		}()
	}
	return nil
}

// lookup returns the named services, or an error naming the first unknown.
func (s *Supervisor) lookup(names []string) ([]*service, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
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

// each runs f in the goroutine of every named service, after checking
// that all names exist.
func (s *Supervisor) each(names []string, f func(sv *service, now time.Time) error) error {
	svcs, err := s.lookup(names)
	if err != nil {
		return err
	}
	var errs []error
	for _, sv := range svcs {
		var ferr error
		if err := sv.call(func() { ferr = f(sv, time.Now()) }); err != nil {
			ferr = err
		}
		if ferr != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", sv.conf.Name, ferr))
		}
	}
	return errors.Join(errs...)
}

// Enable lets the class rules start instances again.
func (s *Supervisor) Enable(names ...string) error {
	return s.each(names, func(sv *service, now time.Time) error {
		sv.enabled = true
		sv.log.Info().Msg("enabled")
		sv.reconcile(now)
		return nil
	})
}

// Disable stops automatic starts; running instances carry on.
func (s *Supervisor) Disable(names ...string) error {
	return s.each(names, func(sv *service, now time.Time) error {
		sv.enabled = false
		sv.log.Info().Msg("disabled")
		sv.reconcile(now)
		return nil
	})
}

// Start starts one instance now if fewer than max run, overriding and
// resetting the backoff. A disabled service runs that one instance but is
// not restarted when it ends.
func (s *Supervisor) Start(name string) error {
	return s.each([]string{name}, func(sv *service, now time.Time) error {
		if sv.conf.Class == conffmt.Stream {
			return errors.New("a stream service starts on connections only")
		}
		if sv.live() >= sv.conf.Max {
			return ErrAtMax
		}
		sv.crashes, sv.holdUntil = 0, time.Time{}
		err := sv.start(now)
		sv.settle(now)
		return err
	})
}

// Stop disables the services and stops their instances: the stop signal,
// then SIGKILL after the stop timeout.
func (s *Supervisor) Stop(names ...string) error {
	return s.each(names, func(sv *service, now time.Time) error {
		sv.enabled = false
		sv.stopInstances(now)
		sv.reconcile(now)
		return nil
	})
}

// Restart stops the instances; the class rules start new ones.
func (s *Supervisor) Restart(names ...string) error {
	return s.each(names, func(sv *service, now time.Time) error {
		sv.stopInstances(now)
		return nil
	})
}

// Kill sends sig to every instance of the service. Instances that die of
// it are not counted as crashes.
func (s *Supervisor) Kill(name string, sig syscall.Signal) error {
	return s.each([]string{name}, func(sv *service, now time.Time) error {
		for _, inst := range sv.instances {
			sv.signal(inst, sig)
		}
		return nil
	})
}

// List returns the status of the named services, or of all in config
// order when no name is given.
func (s *Supervisor) List(names ...string) ([]Status, error) {
	var svcs []*service
	if len(names) == 0 {
		s.mu.Lock()
		svcs = slices.Clone(s.order)
		s.mu.Unlock()
	} else {
		var err error
		if svcs, err = s.lookup(names); err != nil {
			return nil, err
		}
	}
	out := make([]Status, 0, len(svcs))
	for _, sv := range svcs {
		var st Status
		if err := sv.call(func() { st = sv.status() }); err != nil {
			continue
		}
		out = append(out, st)
	}
	return out, nil
}

// Shutdown stops every service: each instance gets its stop signal, and
// SIGKILL after the stop timeout. It returns when every instance has been
// reaped, or with ctx's error when ctx ends first.
func (s *Supervisor) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	svcs := slices.Clone(s.order)
	s.mu.Unlock()
	for _, sv := range svcs {
		_ = sv.call(func() { sv.quit(time.Now()) })
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func sortInstances(in []Instance) {
	slices.SortFunc(in, func(a, b Instance) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return a.PID - b.PID
	})
}
