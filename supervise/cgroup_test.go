package supervise

import (
	"context"
	"slices"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"metad/conffmt"
	"metad/init"
)

// fakeGroup is a service's cgroup over fakeProcs: every running fake
// process is in it, or, with only, those of only that still run, or,
// with service, those of that service (fakeProcs.owner).
type fakeGroup struct {
	f       *fakeProcs
	only    []int
	service string
	signal  func(int, syscall.Signal) error // nil: obeys all but SIGTERM

	mu      sync.Mutex
	removed int
}

func (g *fakeGroup) into(*initsys.Proc) {}

func (g *fakeGroup) PIDs() ([]int, error) {
	g.f.mu.Lock()
	defer g.f.mu.Unlock()
	var out []int
	for pid := range g.f.running {
		switch {
		case g.service != "":
			if g.f.owner[pid] == g.service {
				out = append(out, pid)
			}
		case g.only == nil || slices.Contains(g.only, pid):
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (g *fakeGroup) Signal(sig syscall.Signal) error {
	signal := g.signal
	if signal == nil {
		signal = g.f.signal(syscall.SIGTERM)
	}
	pids, _ := g.PIDs()
	for _, pid := range pids {
		signal(pid, sig)
	}
	return nil
}

// Wait polls: the fake clock makes it free.
func (g *fakeGroup) Wait(ctx context.Context) error {
	for {
		if pids, _ := g.PIDs(); len(pids) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (g *fakeGroup) Remove() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.removed++
	return nil
}

func (g *fakeGroup) removals() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.removed
}

// fakeGroups holds a fakeGroup per service name.
type fakeGroups struct {
	mu     sync.Mutex
	groups map[string]*fakeGroup
}

func (fg *fakeGroups) service(name string) (group, error) {
	fg.mu.Lock()
	defer fg.mu.Unlock()
	return fg.groups[name], nil
}

func (fg *fakeGroups) services() ([]string, error) {
	fg.mu.Lock()
	defer fg.mu.Unlock()
	var names []string
	for name := range fg.groups {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// stray starts a process outside every session, as one that called
// setsid, and returns its pid. With a parent, it is in the parent's
// service's cgroup (fakeGroup.service).
func (f *fakeProcs) stray(parent ...int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	f.running[f.next] = nil
	if len(parent) > 0 {
		f.owner[f.next] = f.owner[parent[0]]
	}
	return f.next
}

// newCgroupSupervisor is newTestSupervisor with cgroups: groups by
// service name. The strays ignore SIGTERM.
func newCgroupSupervisor(t testing.TB, f *fakeProcs, groups map[string]*fakeGroup, svcs ...conffmt.Service) *Supervisor {
	t.Helper()
	s, err := New(Config{Log: zerolog.Nop(), Procs: f, Signal: f.signal(syscall.SIGTERM), StopTimeout: 10 * time.Second, Env: []string{}, Custody: f})
	if err != nil {
		t.Fatal(err)
	}
	s.groups = &fakeGroups{groups: groups}
	if err := s.Load(svcs); err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fakeProcs) sentTo(pid int) []syscall.Signal {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []syscall.Signal
	for _, s := range f.signals {
		if s.pid == pid {
			out = append(out, s.sig)
		}
	}
	return out
}

// TestCgroupStraysStoppedBeforeRestart: what an instance leaves in the
// service's cgroup outside its session (a setsid caller) is in custody
// once no instance runs: listed, the stop signal, SIGKILL after the stop
// timeout, before the next start.
func TestCgroupStraysStoppedBeforeRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		f := newFakeProcs()
		g := &fakeGroup{f: f}
		s := newCgroupSupervisor(t, f, map[string]*fakeGroup{"leaky": g}, daemon("leaky", 1, 1))
		synctest.Wait()
		pid := f.pids()[0]
		stray := f.stray()
		f.end(pid, exitCode(1))
		synctest.Wait()
		st, _ := s.List("leaky")
		if len(st[0].Custody) != 1 || st[0].Custody[0] != stray || st[0].State != "stopping" {
			t.Errorf("got custody %v, state %s, want [%d] stopping", st[0].Custody, st[0].State, stray)
		}
		f.waitStarts(t, 2, time.Minute)
		if got := f.startTimes()[1].Sub(t0); got != 10*time.Second {
			t.Errorf("got the restart after %v, want 10s (the stray's SIGKILL)", got)
		}
		if got, want := f.sentTo(stray), []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}; !slices.Equal(got, want) {
			t.Errorf("got signals %v to the stray, want %v", got, want)
		}
		shutdown(t, s)
		if n := g.removals(); n != 1 {
			t.Errorf("got the cgroup removed %d times at shutdown, want 1", n)
		}
	})
}

// TestCgroupStraysWaitForTheLastInstance: while another instance runs, a
// process in the cgroup may be its own: an instance's end takes only its
// session; the cgroup is emptied at the stop.
func TestCgroupStraysWaitForTheLastInstance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProcs()
		g := &fakeGroup{f: f}
		s := newCgroupSupervisor(t, f, map[string]*fakeGroup{"pair": g}, daemon("pair", 2, 2))
		f.waitStarts(t, 2, time.Minute)
		stray := f.stray()
		f.end(f.pids()[0], exitCode(0))
		f.waitStarts(t, 3, time.Minute)
		if got := f.sentTo(stray); len(got) != 0 {
			t.Errorf("got signals %v to a process of a running instance's, want none", got)
		}
		if err := s.Stop("pair"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		st, _ := s.List("pair")
		if len(st[0].Custody) != 1 || st[0].Custody[0] != stray {
			t.Errorf("after stop: got custody %v, want [%d]", st[0].Custody, stray)
		}
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		if got, want := f.sentTo(stray), []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}; !slices.Equal(got, want) {
			t.Errorf("got signals %v to the stray at the stop, want %v", got, want)
		}
		if pids := f.pids(); len(pids) != 0 {
			t.Errorf("got %v left after the stop, want nothing", pids)
		}
		shutdown(t, s)
	})
}

// TestCgroupOfServiceNoLongerConfigured: at the first load, the cgroup of
// a service that is not in the config (left by a previous metad) is
// emptied and removed; a reload that removes a service removes its cgroup
// once it has stopped.
func TestCgroupOfServiceNoLongerConfigured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProcs()
		old := &fakeGroup{f: f, only: []int{f.stray()}}
		web, gone := &fakeGroup{f: f, only: []int{}}, &fakeGroup{f: f, only: []int{}}
		s := newCgroupSupervisor(t, f, map[string]*fakeGroup{"old": old, "web": web, "gone": gone},
			daemon("web", 0, 1), daemon("gone", 0, 1))
		synctest.Wait()
		time.Sleep(10*time.Second + removeWait)
		synctest.Wait()
		if n := old.removals(); n != 1 {
			t.Errorf("got the stale cgroup removed %d times, want 1", n)
		}
		if pids, _ := old.PIDs(); len(pids) != 0 {
			t.Errorf("got %v left in the stale cgroup, want nothing", pids)
		}
		s.Reload([]conffmt.Service{daemon("web", 0, 1)})
		synctest.Wait()
		if n, m := gone.removals(), web.removals(); n != 1 || m != 0 {
			t.Errorf("after the reload: got removals gone %d, web %d, want 1, 0", n, m)
		}
		shutdown(t, s)
		if n := web.removals(); n != 1 {
			t.Errorf("after shutdown: got web's cgroup removed %d times, want 1", n)
		}
	})
}

func TestCgroupsName(t *testing.T) {
	a, b := CgroupsName("/run/metad.sock"), CgroupsName("/tmp/other.sock")
	if a == b || a != CgroupsName("/run/../run/metad.sock") || !validName(a) || !validName(b) {
		t.Errorf("got %q and %q, want two single path elements, one per socket", a, b)
	}
	if got := CgroupsName(""); !validName(got) || got == a {
		t.Errorf("without a socket: got %q, want one of its own", got)
	}
}

func validName(s string) bool {
	return len(s) > len("metad.") && s[:len("metad.")] == "metad." && !slices.Contains([]byte(s), '/')
}
