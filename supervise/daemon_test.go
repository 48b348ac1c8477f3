package supervise

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
)

// Every service test runs inside a testing/synctest bubble, on its fake
// clock: a test waits for events (starts, exits) with waitFor, and the
// clock jumps to the next timer whenever every goroutine is blocked, so
// backoff and period schedules of minutes or hours are checked to the
// nanosecond without waiting for them.

// fakeProcs stands in for the reaper: it hands out pids, runs each
// instance as its script says (how long, and how it ends), remembers when
// each was started, and lets the test end them.
type fakeProcs struct {
	mu      sync.Mutex
	next    int
	running map[int]func(initsys.Exit)
	starts  []time.Time // instances started
	tries   []time.Time // calls of Spawn, failed ones included
	tried   []string    // argv[0] of each call of Spawn
	signals []sent
	failing bool // Spawn fails like a missing program
	// script says how the n-th instance (from 1) runs: it ends after
	// life with status ws, or runs until signalled when ends is false.
	script func(n int) (life time.Duration, ws unix.WaitStatus, ends bool)
	notify chan struct{} // poked on every start, try and end
	// sessions holds the processes left in each session (by the pid of
	// the instance that started it), as CustodySource reports them.
	sessions map[int][]int
	// owner holds the service (argv[0]) of every process, for cgroups.
	owner map[int]string
	// spawned, if not nil, is called with argv[0] before each Spawn,
	// without the lock.
	spawned func(name string)
}

type sent struct {
	pid int
	sig syscall.Signal
}

func newFakeProcs() *fakeProcs {
	return &fakeProcs{next: 1000, running: make(map[int]func(initsys.Exit)), notify: make(chan struct{}, 1), sessions: make(map[int][]int), owner: make(map[int]string)}
}

// Members is the fake's CustodySource: the processes left in sessions.
func (f *fakeProcs) Members(_ string, sessions []int, _ bool) ([]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for _, sid := range sessions {
		out = append(out, f.sessions[sid]...)
	}
	return out, nil
}

// leave makes the instance pid leave a process behind in its session
// when it ends, and returns that process's pid.
func (f *fakeProcs) leave(pid int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	f.running[f.next] = nil
	f.owner[f.next] = f.owner[pid]
	f.sessions[pid] = append(f.sessions[pid], f.next)
	return f.next
}

func (f *fakeProcs) poke() {
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

func (f *fakeProcs) Spawn(p *initsys.Proc, done func(initsys.Exit)) (int, error) {
	if f.spawned != nil {
		f.spawned(p.Argv[0])
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.poke()
	f.tries = append(f.tries, time.Now())
	f.tried = append(f.tried, p.Argv[0])
	if f.failing {
		return 0, syscall.ENOENT
	}
	f.next++
	pid := f.next
	f.running[pid] = done
	f.owner[pid] = p.Argv[0]
	f.starts = append(f.starts, time.Now())
	if f.script != nil {
		if life, ws, ends := f.script(len(f.starts)); ends {
			time.AfterFunc(life, func() { f.end(pid, ws) })
		}
	}
	return pid, nil
}

// waitFor waits until cond, checked under the lock, holds, or until limit
// has passed on the clock; it reports whether cond held.
func (f *fakeProcs) waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.After(limit)
	for {
		f.mu.Lock()
		ok := cond()
		f.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-f.notify:
		case <-deadline:
			return false
		}
	}
}

// waitStarts waits for n starts, failing the test after limit.
func (f *fakeProcs) waitStarts(t testing.TB, n int, limit time.Duration) {
	t.Helper()
	if !f.waitFor(limit, func() bool { return len(f.starts) >= n }) {
		t.Fatalf("got %d starts in %v, want %d", len(f.startTimes()), limit, n)
	}
}

func (f *fakeProcs) Adopt(pid int, done func(initsys.Exit)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.running[pid]; !ok {
		return initsys.ErrNotChild
	}
	f.running[pid] = done
	return nil
}

// end makes pid exit with status ws.
func (f *fakeProcs) end(pid int, ws unix.WaitStatus) {
	f.mu.Lock()
	done := f.running[pid]
	delete(f.running, pid)
	delete(f.owner, pid)
	for sid, pids := range f.sessions {
		if pids = slices.DeleteFunc(pids, func(p int) bool { return p == pid }); len(pids) == 0 {
			delete(f.sessions, sid)
		} else {
			f.sessions[sid] = pids
		}
	}
	f.mu.Unlock()
	f.poke()
	if done != nil {
		done(initsys.Exit{PID: pid, Status: ws, Time: time.Now()})
	}
}

// signal records a signal and, like a process that obeys, ends the
// group's process with it (SIGKILL always; other signals unless ignored).
func (f *fakeProcs) signal(ignore syscall.Signal) func(int, syscall.Signal) error {
	return func(pid int, sig syscall.Signal) error {
		f.mu.Lock()
		f.signals = append(f.signals, sent{pid, sig})
		f.mu.Unlock()
		if pid < 0 {
			pid = -pid
		}
		if sig != ignore || sig == syscall.SIGKILL {
			go f.end(pid, unix.WaitStatus(sig))
		}
		return nil
	}
}

func (f *fakeProcs) pids() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for pid := range f.running {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out
}

func (f *fakeProcs) startTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.starts)
}

func exitCode(c int) unix.WaitStatus { return unix.WaitStatus(c << 8) }

// daemon returns a defaulted daemon service as conffmt would.
func daemon(name string, min, max int) conffmt.Service {
	return conffmt.Service{
		Name: name, Class: conffmt.Daemon, Min: min, Max: max, Enabled: true,
		Dir: "/", Crash: 10 * time.Second, Backoff: 5 * time.Minute, Stop: syscall.SIGTERM,
		Program: "/bin/true", Path: "/bin/true", Argv0: "/bin/true",
	}
}

func newTestSupervisor(t testing.TB, f *fakeProcs, ignore syscall.Signal, svcs ...conffmt.Service) *Supervisor {
	t.Helper()
	s, err := New(Config{Log: zerolog.Nop(), Procs: f, Signal: f.signal(ignore), StopTimeout: 10 * time.Second, Env: []string{}, Custody: f})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(svcs); err != nil {
		t.Fatal(err)
	}
	return s
}

func shutdown(t testing.TB, s *Supervisor) {
	t.Helper()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// offsets returns each time as its distance from t0.
func offsets(t0 time.Time, ts []time.Time) []time.Duration {
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		out[i] = t.Sub(t0)
	}
	return out
}

func TestDaemonCrashLoopBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		f := newFakeProcs()
		f.script = func(int) (time.Duration, unix.WaitStatus, bool) { return 0, exitCode(1), true } // crashes at once
		svc := daemon("crashy", 1, 1)
		svc.Backoff = 8 * time.Second
		s := newTestSupervisor(t, f, 0, svc)
		f.waitStarts(t, 8, time.Hour)
		synctest.Wait()
		got := offsets(t0, f.startTimes())
		want := []time.Duration{0, 1 * time.Second, 3 * time.Second, 7 * time.Second, 15 * time.Second, 23 * time.Second, 31 * time.Second, 39 * time.Second}
		if !slices.Equal(got, want) {
			t.Errorf("got starts at %v, want %v", got, want)
		}
		st, _ := s.List("crashy")
		if st[0].Crashes != 8 || st[0].State != "backoff" {
			t.Errorf("got crashes %d state %s, want 8 backoff", st[0].Crashes, st[0].State)
		}
		shutdown(t, s)
	})
}

func TestDaemonCleanExitRestartsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		f := newFakeProcs()
		f.script = func(n int) (time.Duration, unix.WaitStatus, bool) { return 0, exitCode(0), n <= 3 }
		s := newTestSupervisor(t, f, 0, daemon("once", 1, 1))
		f.waitStarts(t, 4, time.Minute)
		synctest.Wait()
		got := offsets(t0, f.startTimes())
		if want := []time.Duration{0, 0, 0, 0}; !slices.Equal(got, want) {
			t.Errorf("got starts at %v, want %v", got, want)
		}
		shutdown(t, s)
	})
}

func TestDaemonHealthyRunResetsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		f := newFakeProcs()
		// Two crashes (restarts after 1s, then 2s), then a failure after a
		// minute's run, which is not a crash: restarted at once.
		f.script = func(n int) (time.Duration, unix.WaitStatus, bool) {
			switch n {
			case 1, 2:
				return 0, exitCode(2), true
			case 3:
				return time.Minute, exitCode(2), true
			default:
				return 0, 0, false
			}
		}
		s := newTestSupervisor(t, f, 0, daemon("flaky", 1, 1))
		f.waitStarts(t, 4, time.Hour)
		synctest.Wait()
		got := offsets(t0, f.startTimes())
		want := []time.Duration{0, 1 * time.Second, 3 * time.Second, 63 * time.Second}
		if !slices.Equal(got, want) {
			t.Errorf("got starts at %v, want %v", got, want)
		}
		st, _ := s.List()
		if st[0].Restarts != 3 || st[0].Crashes != 0 {
			t.Errorf("got restarts %d crashes %d, want 3 and 0", st[0].Restarts, st[0].Crashes)
		}
		shutdown(t, s)
	})
}

func TestDaemonMinMax(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProcs()
		s := newTestSupervisor(t, f, 0, daemon("three", 3, 3))
		synctest.Wait()
		pids := f.pids()
		if len(pids) != 3 {
			t.Fatalf("got %d instances, want 3", len(pids))
		}
		if err := s.Start("three"); err == nil {
			t.Errorf("start at max: got no error, want one")
		}
		if err := s.Kill("three", syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := f.pids(); len(got) != 3 || slices.Contains(got, pids[0]) {
			t.Errorf("got instances %v, want 3 new ones", got)
		}
		if got := len(f.startTimes()); got != 6 {
			t.Errorf("got %d starts, want 6", got)
		}
		shutdown(t, s)
	})
}

func TestDaemonPeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		f := newFakeProcs()
		// The first run lasts 90 minutes: the period due at 2h finds it
		// running and is skipped.
		f.script = func(n int) (time.Duration, unix.WaitStatus, bool) { return 90 * time.Minute, exitCode(0), n == 1 }
		svc := daemon("hourly", 0, 1)
		svc.Period = time.Hour
		s := newTestSupervisor(t, f, 0, svc)
		f.waitStarts(t, 2, 5*time.Hour)
		got := offsets(t0, f.startTimes())
		if want := []time.Duration{time.Hour, 3 * time.Hour}; !slices.Equal(got, want) {
			t.Errorf("got starts at %v, want %v", got, want)
		}
		shutdown(t, s)
	})
}

func TestDaemonPeriodUpToMax(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		f := newFakeProcs()
		svc := daemon("grow", 1, 3)
		svc.Period = time.Minute
		s := newTestSupervisor(t, f, 0, svc)
		if f.waitFor(10*time.Minute, func() bool { return len(f.starts) > 3 }) {
			t.Errorf("got a fourth instance, want at most max=3")
		}
		got := offsets(t0, f.startTimes())
		if want := []time.Duration{0, time.Minute, 2 * time.Minute}; !slices.Equal(got, want) {
			t.Errorf("got starts at %v, want %v", got, want)
		}
		shutdown(t, s)
	})
}

func TestManualStartOverridesBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		f := newFakeProcs()
		f.script = func(n int) (time.Duration, unix.WaitStatus, bool) { return 0, exitCode(1), n <= 6 } // six crashes
		s := newTestSupervisor(t, f, 0, daemon("svc", 1, 1))
		// Starts at 0, 1, 3, 7, 15, 31s; the next would wait 32s, until 63s.
		f.waitStarts(t, 6, time.Hour)
		synctest.Wait()
		if err := s.Start("svc"); err != nil {
			t.Fatal(err)
		}
		want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second, 15 * time.Second, 31 * time.Second, 31 * time.Second}
		if got := offsets(t0, f.startTimes()); !slices.Equal(got, want) {
			t.Errorf("got starts at %v, want %v", got, want)
		}
		st, _ := s.List("svc")
		if st[0].Crashes != 0 || len(st[0].Instances) != 1 {
			t.Errorf("got crashes %d, %d instances, want 0 and 1", st[0].Crashes, len(st[0].Instances))
		}
		shutdown(t, s)
	})
}

func TestStopEscalatesToKill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProcs()
		s := newTestSupervisor(t, f, syscall.SIGTERM, daemon("stubborn", 2, 2))
		synctest.Wait()
		t0 := time.Now()
		if err := s.Stop("stubborn"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := len(f.pids()); n != 2 {
			t.Fatalf("got %d instances after SIGTERM, want 2 (they ignore it)", n)
		}
		if !f.waitFor(time.Minute, func() bool { return len(f.running) == 0 }) {
			t.Errorf("got %d instances a minute after stop, want 0", len(f.pids()))
		}
		if got := time.Since(t0); got != 10*time.Second {
			t.Errorf("killed after %v, want 10s", got)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		var sigs []syscall.Signal
		for _, s := range f.signals {
			sigs = append(sigs, s.sig)
		}
		want := []syscall.Signal{syscall.SIGTERM, syscall.SIGTERM, syscall.SIGKILL, syscall.SIGKILL}
		if !slices.Equal(sigs, want) {
			t.Errorf("got signals %v, want %v", sigs, want)
		}
		if n := len(f.starts); n != 2 {
			t.Errorf("got %d starts, want 2 (a stopped service is not restarted)", n)
		}
		f.mu.Unlock()
		shutdown(t, s)
		f.mu.Lock()
	})
}

func TestDisabledStartsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProcs()
		svc := daemon("off", 1, 1)
		svc.Enabled = false
		s := newTestSupervisor(t, f, 0, svc)
		synctest.Wait()
		if n := len(f.startTimes()); n != 0 {
			t.Fatalf("got %d starts while disabled, want 0", n)
		}
		if err := s.Enable("off"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := s.Disable("off"); err != nil {
			t.Fatal(err)
		}
		f.end(f.pids()[0], exitCode(0))
		synctest.Wait()
		if n := len(f.startTimes()); n != 1 {
			t.Errorf("got %d starts, want 1", n)
		}
		if err := s.Enable("nope"); err == nil {
			t.Errorf("enable of an unknown service: got no error")
		}
		shutdown(t, s)
	})
}

func TestMissingProgramBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		f := newFakeProcs()
		f.failing = true
		s := newTestSupervisor(t, f, 0, daemon("gone", 1, 1))
		if !f.waitFor(time.Hour, func() bool { return len(f.tries) >= 4 }) {
			t.Fatalf("fewer than 4 tries in an hour")
		}
		f.mu.Lock()
		got := offsets(t0, f.tries)
		f.mu.Unlock()
		if want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second}; !slices.Equal(got, want) {
			t.Errorf("got tries at %v, want %v (backoff as for a crash)", got, want)
		}
		shutdown(t, s)
	})
}

func TestReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProcs()
		keep, grow, swap, gone := daemon("keep", 1, 1), daemon("grow", 1, 1), daemon("swap", 1, 1), daemon("gone", 1, 1)
		s := newTestSupervisor(t, f, 0, keep, grow, swap, gone)
		synctest.Wait()
		pidsOf := func() map[string][]int {
			st, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			pids := map[string][]int{}
			for _, x := range st {
				for _, in := range x.Instances {
					pids[x.Name] = append(pids[x.Name], in.PID)
				}
			}
			return pids
		}
		b := pidsOf()
		before := []int{b["keep"][0], b["grow"][0], b["swap"][0], b["gone"][0]}
		grow2 := grow
		grow2.Max, grow2.Min = 3, 2
		grow2.Pos = conffmt.Pos{Line: 9, Col: 1} // moved in the file: not a change
		swap2 := swap
		swap2.Args = []string{"--new"}
		added := daemon("added", 1, 1)
		keep2 := keep
		keep2.Pos = conffmt.Pos{Line: 1, Col: 1}
		d := s.Reload([]conffmt.Service{keep2, grow2, swap2, added})
		synctest.Wait()
		if got, want := fmt.Sprint(d.Added, d.Removed, d.Changed), "[added] [gone] [grow swap]"; got != want {
			t.Errorf("got diff %s, want %s", got, want)
		}
		pids := pidsOf()
		if got := pids["keep"]; len(got) != 1 || got[0] != before[0] {
			t.Errorf("unchanged service: got pids %v, want [%d]", got, before[0])
		}
		if got := pids["grow"]; len(got) != 2 || got[0] != before[1] {
			t.Errorf("grown service: got pids %v, want %d kept and one more", got, before[1])
		}
		if got := pids["swap"]; len(got) != 1 || got[0] == before[2] {
			t.Errorf("changed program: got pids %v, want one new instance", got)
		}
		if _, ok := pids["gone"]; ok || slices.Contains(f.pids(), before[3]) {
			t.Errorf("removed service still runs: %v", pids["gone"])
		}
		if got := pids["added"]; len(got) != 1 {
			t.Errorf("added service: got pids %v, want one", got)
		}
		if err := s.Enable("gone"); err == nil {
			t.Errorf("removed service can still be enabled")
		}
		shutdown(t, s)
	})
}
