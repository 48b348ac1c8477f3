package supervise

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"metad/init"
)

// group is a service's cgroup as supervise uses it; *initsys.Cgroup
// implements it through cgroupOf, tests use a fake. Its methods are safe
// for concurrent use, except remove.
type group interface {
	// into makes p start in the cgroup.
	into(p *initsys.Proc)
	// PIDs lists every process in the cgroup.
	PIDs() ([]int, error)
	// Signal sends sig to every process in the cgroup, once. (Not
	// Cgroup.Kill: on some kernels a cgroup.kill leaves the cgroup
	// killing every process started into it with CLONE_INTO_CGROUP
	// afterwards, for good; custody's rescans catch what forks meanwhile.)
	Signal(sig syscall.Signal) error
	// Wait blocks until the cgroup is empty or ctx is done.
	Wait(ctx context.Context) error
	// Remove removes the empty cgroup.
	Remove() error
}

// groups makes the services' cgroups; *initsys.Cgroups implements it
// through cgroupsOf.
type groups interface {
	service(name string) (group, error)
	services() ([]string, error)
}

type cgroupsOf struct{ *initsys.Cgroups }

// groupsOf returns cg as groups, nil when cg is.
func groupsOf(cg *initsys.Cgroups) groups {
	if cg == nil {
		return nil
	}
	return cgroupsOf{cg}
}

func (c cgroupsOf) service(name string) (group, error) {
	g, err := c.Service(name)
	if err != nil {
		return nil, err
	}
	return cgroupOf{g}, nil
}

func (c cgroupsOf) services() ([]string, error) { return c.Services() }

type cgroupOf struct{ *initsys.Cgroup }

func (c cgroupOf) into(p *initsys.Proc) { p.Cgroup = c.Cgroup }

// groupRef is a service's cgroup with the number of services that use it:
// a service removed by a reload and added again by the next may still be
// stopping while its successor starts, in the same cgroup.
type groupRef struct {
	g     group
	users int
}

// removeWait bounds the wait for a service's cgroup to be empty before
// it is removed: what is left is a process killed and not reaped yet.
const removeWait = time.Second

// killTries is how many times SIGKILL goes to what a service no longer
// configured left, within removeWait.
const killTries = 10

// CgroupsName returns the name of metad's cgroup for the control socket
// socket: "metad" and a hash of the socket's absolute path, so that two
// metads on one machine with different sockets, even started in the same
// cgroup, get different ones, while a re-exec, or a metad started again
// on the same socket, takes over the same one. Without a socket, the name
// has metad's pid instead.
func CgroupsName(socket string) string {
	if socket == "" {
		return "metad.pid" + strconv.Itoa(os.Getpid()) // kept by a re-exec
	}
	if abs, err := filepath.Abs(socket); err == nil {
		socket = abs
	}
	h := fnv.New32a()
	h.Write([]byte(socket))
	return fmt.Sprintf("metad.%08x", h.Sum32())
}

// takeGroup returns the cgroup of service name, made or taken over now,
// or nil (logged at warning) when there are no cgroups or it cannot be
// made: the service then runs without. s.mu must be held.
func (s *Supervisor) takeGroup(name string) group {
	if s.groups == nil {
		return nil
	}
	if ref, ok := s.cgroups[name]; ok {
		ref.users++
		return ref.g
	}
	g, err := s.groups.service(name)
	if err != nil {
		s.cfg.Log.Warn().Err(err).Str("svc", name).Msg("no cgroup for the service: custody by session only")
		return nil
	}
	s.cgroups[name] = &groupRef{g: g, users: 1}
	return g
}

// releaseGroup gives back the cgroup of a service that has ended, and
// removes it, once empty, unless another service of that name uses it.
// It blocks up to removeWait.
func (s *Supervisor) releaseGroup(name string, g group) {
	if g == nil {
		return
	}
	s.mu.Lock()
	ref := s.cgroups[name]
	if ref == nil || ref.g != g {
		s.mu.Unlock()
		return
	}
	ref.users--
	last := ref.users == 0
	s.mu.Unlock()
	if last {
		s.removeGroup(name, ref)
	}
}

// removeGroup removes a cgroup no service uses, once empty (waiting up to
// removeWait), unless a service of that name has taken it meanwhile. It
// reports whether it removed it.
func (s *Supervisor) removeGroup(name string, ref *groupRef) bool {
	ctx, cancel := context.WithTimeout(context.Background(), removeWait)
	ref.g.Wait(ctx)
	cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if ref.users > 0 || s.cgroups[name] != ref {
		return false
	}
	delete(s.cgroups, name)
	if err := ref.g.Remove(); err != nil {
		s.cfg.Log.Warn().Err(err).Str("svc", name).Msg("cannot remove the service's cgroup")
		return false
	}
	return true
}

// unused reports whether no service uses ref any more.
func (s *Supervisor) unused(name string, ref *groupRef) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ref.users == 0 && s.cgroups[name] == ref
}

// sweepGroups empties and removes, once, the cgroups of services that are
// not loaded: what a previous metad on the same socket left, after a
// re-exec into a config without them or a crash. Their processes get
// SIGTERM, then SIGKILL after the stop timeout. s.mu must be held.
func (s *Supervisor) sweepGroups() {
	if s.groups == nil || s.swept {
		return
	}
	s.swept = true
	names, err := s.groups.services()
	if err != nil {
		s.cfg.Log.Warn().Err(err).Msg("cannot look for cgroups of services no longer configured")
		return
	}
	for _, name := range names {
		if _, ok := s.cgroups[name]; ok {
			continue
		}
		g, err := s.groups.service(name)
		if err != nil {
			s.cfg.Log.Warn().Err(err).Str("svc", name).Msg("cannot take the cgroup of a service no longer configured")
			continue
		}
		ref := &groupRef{g: g}
		s.cgroups[name] = ref
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.emptyGroup(name, ref)
		}()
	}
}

// emptyGroup stops what is left in the cgroup of a service no longer
// configured (SIGTERM, SIGKILL after the stop timeout) and removes it,
// unless a reload has added a service of that name meanwhile.
func (s *Supervisor) emptyGroup(name string, ref *groupRef) {
	log := s.cfg.Log.With().Str("svc", name).Logger()
	pids, err := ref.g.PIDs()
	if err != nil {
		log.Warn().Err(err).Msg("cannot list the cgroup of a service no longer configured")
	}
	if len(pids) > 0 && s.unused(name, ref) {
		slices.Sort(pids)
		log.Warn().Ints("pids", pids).Msg("stopping what a service no longer configured left")
		for _, pid := range pids {
			if err := s.cfg.Signal(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
				log.Warn().Err(err).Int("pid", pid).Msg("cannot signal")
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StopTimeout)
		err := ref.g.Wait(ctx)
		cancel()
		// SIGKILL, again for what forked meanwhile, until it is empty.
		for try := 0; err != nil && try < killTries && s.unused(name, ref); try++ {
			if err := ref.g.Signal(syscall.SIGKILL); err != nil {
				log.Warn().Err(err).Msg("cannot kill what a service no longer configured left")
			}
			ctx, cancel := context.WithTimeout(context.Background(), removeWait/killTries)
			err = ref.g.Wait(ctx)
			cancel()
		}
	}
	if s.removeGroup(name, ref) {
		log.Info().Msg("removed the cgroup of a service no longer configured")
	}
}
