package supervise

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"metad/conffmt"
)

// TestListShowsBackoffNotPeriod is defect 5 of issue 12: with min=1 and
// period=1h a crash of the first run is followed by a start after the
// backoff, and list says so.
func TestListShowsBackoffNotPeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		f := newFakeProcs()
		f.script = func(n int) (time.Duration, unix.WaitStatus, bool) { return 0, exitCode(1), n == 1 }
		svc := daemon("hourly", 1, 1)
		svc.Period = time.Hour
		s := newTestSupervisor(t, f, 0, svc)
		synctest.Wait()
		st, _ := s.List("hourly")
		if got, want := st[0].NextStart.Sub(t0), time.Second; got != want || st[0].State != "backoff" {
			t.Errorf("got next start in %v, state %s, want %v, backoff", got, st[0].State, want)
		}
		f.waitStarts(t, 2, time.Hour)
		if got := f.startTimes()[1].Sub(t0); got != time.Second {
			t.Errorf("got the restart after %v, want 1s", got)
		}
		shutdown(t, s)
	})
}

// TestClosedDuringShutdown is defect 4: once Shutdown has begun nothing
// starts, even while an instance that ignores its stop signal holds the
// shutdown up.
func TestClosedDuringShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProcs()
		s := newTestSupervisor(t, f, syscall.SIGTERM, daemon("stubborn", 1, 2))
		synctest.Wait()
		done := make(chan error)
		go func() { done <- s.Shutdown(context.Background()) }()
		synctest.Wait() // the instance has had SIGTERM and ignores it
		for name, err := range map[string]error{
			"start":   s.Start("stubborn"),
			"enable":  s.Enable("stubborn"),
			"restart": s.Restart("stubborn"),
			"load":    s.Load([]conffmt.Service{daemon("late", 1, 1)}),
		} {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s during shutdown: got %v, want ErrClosed", name, err)
			}
		}
		if d := s.Reload([]conffmt.Service{daemon("stubborn", 1, 2), daemon("late", 1, 1)}); len(d.Added) != 0 {
			t.Errorf("reload during shutdown added %v", d.Added)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := len(f.startTimes()); n != 1 {
			t.Errorf("got %d starts, want 1", n)
		}
		if pids := f.pids(); len(pids) != 0 {
			t.Errorf("still running after shutdown: %v", pids)
		}
	})
}

// TestStuckServiceIsBounded: a service goroutine that does not answer
// makes requests fail with its name after the call timeout, and Shutdown
// end by its context, naming it.
func TestStuckServiceIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProcs()
		s := newTestSupervisor(t, f, 0, daemon("stuck", 1, 1), daemon("fine", 1, 1))
		synctest.Wait()
		svcs, _ := s.lookup([]string{"stuck"}, false)
		unstick := make(chan struct{})
		go ask(svcs[0], time.Hour, func(time.Time) struct{} { <-unstick; return struct{}{} })
		synctest.Wait()
		t0 := time.Now()
		err := s.Enable("stuck")
		if err == nil || !strings.Contains(err.Error(), `"stuck"`) || time.Since(t0) != DefaultCallTimeout {
			t.Errorf("enable of a stuck service: got %v after %v, want an error naming it after %v", err, time.Since(t0), DefaultCallTimeout)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		err = s.Shutdown(ctx)
		if err == nil || !strings.Contains(err.Error(), `"stuck"`) || strings.Contains(err.Error(), `"fine"`) {
			t.Errorf("shutdown: got %v, want an error naming stuck only", err)
		}
		close(unstick)
		shutdown(t, s)
	})
}

// streamSupervisor returns a supervisor with one stream service on fake
// sockets.
func streamSupervisor(t *testing.T, f *fakeProcs, svc conffmt.Service) (*Supervisor, *fakeSockets) {
	t.Helper()
	s, err := New(Config{Log: zerolog.Nop(), Procs: f, Signal: f.signal(0), StopTimeout: 10 * time.Second, Env: []string{}, Custody: f})
	if err != nil {
		t.Fatal(err)
	}
	fs := newFakeSockets()
	s.sockets = fs
	if err := s.Load([]conffmt.Service{svc}); err != nil {
		t.Fatal(err)
	}
	synctest.Wait()
	return s, fs
}

// TestCrashHeldAgainstClient is defect 2 of issue 12: crashes of one
// client's connections hold one slot at most, the client's own, and
// count for the service's backoff only when they come from several
// addresses. A program killed by SIGPIPE is no crash at all.
func TestCrashHeldAgainstClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
		f := newFakeProcs()
		s, fs := streamSupervisor(t, f, streamService("echo", 7000, 4))
		connect := func(addr netip.Addr) int {
			t.Helper()
			n := len(f.startTimes())
			if !fs.connect(7000, addr) {
				t.Fatal("connection refused")
			}
			synctest.Wait()
			if len(f.startTimes()) == n {
				t.Fatalf("connection from %v not served", addr)
			}
			pids := f.pids()
			return pids[len(pids)-1]
		}
		status := func() Status { st, _ := s.List("echo"); return st[0] }

		// A SIGPIPE is the client's doing: no hold.
		f.end(connect(a), unix.WaitStatus(syscall.SIGPIPE))
		synctest.Wait()
		if st := status(); st.Held != 0 || st.Crashes != 0 {
			t.Fatalf("after SIGPIPE: got %d held, %d crashes, want none", st.Held, st.Crashes)
		}
		// Crashes from a hold one slot, a's, however many there are.
		for range 3 {
			f.end(connect(a), exitCode(1))
			synctest.Wait()
		}
		if st := status(); st.Held != 1 || st.Crashes != 0 {
			t.Errorf("one address crashing: got %d held, %d service crashes, want 1 and 0", st.Held, st.Crashes)
		}
		// b crashes too: crashes from several addresses count for the
		// service, and hold a slot of the service's.
		f.end(connect(b), exitCode(1))
		synctest.Wait()
		if st := status(); st.Held != 2 || st.Crashes != 1 {
			t.Errorf("two addresses crashing: got %d held, %d service crashes, want 2 and 1", st.Held, st.Crashes)
		}
		time.Sleep(4 * time.Second) // a's third crash: 4s
		synctest.Wait()
		if st := status(); st.Held != 0 {
			t.Errorf("after the backoff: got %d held, want 0", st.Held)
		}
		// A clean run ends the streak.
		f.end(connect(a), exitCode(0))
		synctest.Wait()
		if st := status(); st.Crashes != 0 {
			t.Errorf("after a clean run: got %d service crashes, want 0", st.Crashes)
		}
		shutdown(t, s)
	})
}

// TestStreamResizeKeepsCount: the slots in use are counted, not stored,
// so a reload of max neither loses nor invents any.
func TestStreamResizeKeepsCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProcs()
		svc := streamService("s", 7000, 2)
		s, fs := streamSupervisor(t, f, svc)
		for _, a := range clients {
			fs.connect(7000, a)
		}
		synctest.Wait()
		if n := len(f.pids()); n != 2 {
			t.Fatalf("got %d instances, want max=2", n)
		}
		svc.Max = 3
		s.Reload([]conffmt.Service{svc})
		synctest.Wait()
		if n := len(f.pids()); n != 3 {
			t.Fatalf("after max=3: got %d instances, want 3", n)
		}
		svc.Max = 1
		s.Reload([]conffmt.Service{svc})
		synctest.Wait()
		for _, pid := range f.pids()[:2] {
			f.end(pid, exitCode(0))
		}
		synctest.Wait()
		if n := len(f.pids()); n != 1 {
			t.Fatalf("after max=1 and two ends: got %d instances, want 1", n)
		}
		f.end(f.pids()[0], exitCode(0))
		synctest.Wait()
		if n := len(f.pids()); n != 1 {
			t.Fatalf("after the third end: got %d instances, want the last client served", n)
		}
		shutdown(t, s)
	})
}

// TestLeftoversStoppedBeforeRestart is defect 3: what a crashed instance
// leaves in its session is stopped, SIGKILL after the stop timeout when it
// ignores the stop signal, before the service starts again; status lists it
// meanwhile.
func TestLeftoversStoppedBeforeRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		f := newFakeProcs()
		s := newTestSupervisor(t, f, syscall.SIGTERM, daemon("leaky", 1, 1))
		synctest.Wait()
		pid := f.pids()[0]
		left := f.leave(pid)
		f.end(pid, exitCode(1))
		synctest.Wait()
		st, _ := s.List("leaky")
		if len(st[0].Custody) != 1 || st[0].Custody[0] != left || st[0].State != "stopping" {
			t.Errorf("got custody %v, state %s, want [%d] stopping", st[0].Custody, st[0].State, left)
		}
		f.waitStarts(t, 2, time.Minute)
		if got := f.startTimes()[1].Sub(t0); got != 10*time.Second {
			t.Errorf("got the restart after %v, want 10s (the leftover's SIGKILL)", got)
		}
		f.mu.Lock()
		got := f.signals
		f.mu.Unlock()
		want := []sent{{left, syscall.SIGTERM}, {left, syscall.SIGKILL}}
		if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("got signals %v, want %v", got, want)
		}
		shutdown(t, s)
	})
}

// TestStartsExitsAndLastExit: the counters of instances started and ended,
// and how the last one ended, as list reports them; a re-exec keeps them.
func TestStartsExitsAndLastExit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProcs()
		// The first two runs fail after 2s (exit 3); the third runs on.
		f.script = func(n int) (time.Duration, unix.WaitStatus, bool) { return 2 * time.Second, exitCode(3), n <= 2 }
		s := newTestSupervisor(t, f, 0, daemon("d", 1, 1))
		f.waitStarts(t, 3, time.Hour)
		synctest.Wait()
		st, _ := s.List("d")
		got := st[0]
		if got.Starts != 3 || got.Exits != 2 || got.LastExit == nil {
			t.Fatalf("got starts %d, exits %d, last exit %+v; want 3, 2 and the second run's end", got.Starts, got.Exits, got.LastExit)
		}
		if e := *got.LastExit; e.Code != 3 || e.Status != "exit status 3" || e.Ran != 2*time.Second || e.Outcome != "crashed" {
			t.Errorf("got last exit %+v, want exit status 3 after 2s, crashed", e)
		}
		state, resume, err := s.Handover(func() func() { return func() {} })
		if err != nil {
			t.Fatal(err)
		}
		var ss ServiceState
		for _, x := range state.Services {
			ss = x
		}
		if ss.Starts != 3 || ss.Exits != 2 || ss.LastExit == nil || ss.LastExit.Code != 3 {
			t.Errorf("handed over starts %d, exits %d, last exit %+v; want 3, 2, code 3", ss.Starts, ss.Exits, ss.LastExit)
		}
		resume()
		shutdown(t, s)
	})
}
