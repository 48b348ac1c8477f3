package supervise

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"strconv"
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

// BenchmarkStreamAccept measures a stream service's own path per
// connection: accept, hand-off to the service goroutine, environment,
// start (a fake that ends at once) and exit handling. Fork and exec are
// left out: initsys's BenchmarkSpawn measures those.
func BenchmarkStreamAccept(b *testing.B) { benchStreamAccept(b, nil) }

// BenchmarkStreamAcceptCgroup is BenchmarkStreamAccept with a real (empty)
// cgroup for the service: what it adds is the look at the cgroup at each
// connection's end.
func BenchmarkStreamAcceptCgroup(b *testing.B) {
	cg, err := initsys.NewCgroups(zerolog.Nop(), "metad-bench-"+strconv.Itoa(os.Getpid()))
	if err != nil {
		b.Skip(err)
	}
	defer cg.Remove()
	benchStreamAccept(b, cgroupsOf{cg})
}

func benchStreamAccept(b *testing.B, groups groups) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	f := newFakeProcs()
	f.script = func(int) (time.Duration, unix.WaitStatus, bool) { return 0, exitCode(0), true }
	starts := 0
	started := func() {
		starts++
		f.waitStarts(b, starts, 10*time.Second)
	}
	svc := conffmt.Service{
		Name: "bench", Class: conffmt.Stream, Max: 1, Enabled: true, Dir: "/",
		Crash: 10 * time.Second, Backoff: 5 * time.Minute, Stop: syscall.SIGTERM,
		Port: port, Addr: netip.MustParseAddr("127.0.0.1"), Backlog: 16,
		Program: "/bin/true", Path: "/bin/true", Argv0: "/bin/true",
	}
	listening := &eventWriter{want: []byte(`"listening"`), seen: make(chan struct{})}
	s, err := New(Config{Log: zerolog.New(listening), Procs: f, Signal: f.signal(0), StopTimeout: time.Second, Env: []string{}, Custody: f})
	if err != nil {
		b.Fatal(err)
	}
	s.groups = groups
	if err := s.Load([]conffmt.Service{svc}); err != nil {
		b.Fatal(err)
	}
	select {
	case <-listening.seen:
	case <-time.After(10 * time.Second):
		b.Fatal("the service does not listen")
	}
	addr := l.Addr().String()
	for b.Loop() {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			b.Fatal(err)
		}
		started()
		c.Close()
	}
	b.StopTimer()
	shutdown(b, s)
}

// eventWriter is a log sink that closes seen at the first line holding want.
type eventWriter struct {
	want []byte
	seen chan struct{}
	once sync.Once
}

func (w *eventWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// streamRig is a supervisor with one stream service on fake sockets and
// a log the test reads back.
type streamRig struct {
	t    *testing.T
	s    *Supervisor
	f    *fakeProcs
	fs   *fakeSockets
	port int
	log  lockedBuffer
}

func newStreamRig(t *testing.T, f *fakeProcs, svc conffmt.Service) *streamRig {
	t.Helper()
	r := &streamRig{t: t, f: f, fs: newFakeSockets(), port: svc.Port}
	s, err := New(Config{Log: zerolog.New(&r.log), Procs: f, Signal: f.signal(0), StopTimeout: 10 * time.Second, Env: []string{}, Custody: f})
	if err != nil {
		t.Fatal(err)
	}
	r.s, s.sockets = s, r.fs
	if err := s.Load([]conffmt.Service{svc}); err != nil {
		t.Fatal(err)
	}
	synctest.Wait()
	return r
}

// connect queues a connection from addr and reports whether it started
// an instance.
func (r *streamRig) connect(addr netip.Addr) bool {
	r.t.Helper()
	n := len(r.f.startTimes())
	if !r.fs.connect(r.port, addr) {
		r.t.Fatal("connection refused by the socket")
	}
	synctest.Wait()
	return len(r.f.startTimes()) > n
}

// burst makes n connections from addr, of which the first served only
// must be served.
func (r *streamRig) burst(addr netip.Addr, n, served int) {
	r.t.Helper()
	for i := range n {
		if got, want := r.connect(addr), i < served; got != want {
			r.t.Fatalf("connection %d from %v: served %v, want %v", i, addr, got, want)
		}
	}
}

func (r *streamRig) status() Status {
	r.t.Helper()
	st, err := r.s.List()
	if err != nil || len(st) != 1 {
		r.t.Fatalf("list: got %v, %v, want one service", st, err)
	}
	return st[0]
}

// lockedBuffer is a log sink safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// refusals returns the refusals the log's "refused" lines count, by rule,
// and the number of lines.
func (l *lockedBuffer) refusals() (map[string]int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	counts, lines := map[string]int{}, 0
	for _, line := range bytes.Split(l.b.Bytes(), []byte("\n")) {
		var ev struct {
			Message string `json:"message"`
			Rule    string `json:"rule"`
			Refused int    `json:"refused"`
		}
		if json.Unmarshal(line, &ev) != nil || ev.Message != "refused" {
			continue
		}
		counts[ev.Rule] += ev.Refused
		lines++
	}
	return counts, lines
}

// TestStreamPerSource: an address gets at most per_source instances at
// once, its slot held by a crash included; its extra connections are
// closed at once and take no slot from the others.
func TestStreamPerSource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := clients[0], clients[1]
		f := newFakeProcs()
		svc := streamService("s", 7000, 8)
		svc.PerSource = 2
		r := newStreamRig(t, f, svc)
		r.burst(a, 5, 2)
		if !r.connect(b) {
			t.Fatal("b not served beside a's refused connections")
		}
		if st := r.status(); st.Refused != (Refused{PerSource: 3}) || len(st.Instances) != 3 {
			t.Errorf("got refused %+v and %d instances, want 3 per_source refusals and 3 instances", st.Refused, len(st.Instances))
		}
		pids := f.pids() // a's two, then b's
		f.end(pids[0], exitCode(0))
		synctest.Wait()
		if !r.connect(a) {
			t.Fatal("a not served after one of its instances ended")
		}
		// A crash holds a slot against a: one instance and the held slot.
		f.end(pids[1], exitCode(1))
		synctest.Wait()
		if r.connect(a) {
			t.Error("a served beyond per_source with a slot held by its crash")
		}
		if !r.connect(b) {
			t.Error("b not served while a's crash holds a slot")
		}
		time.Sleep(2 * time.Second) // the hold of a's first crash: 1s
		synctest.Wait()
		if !r.connect(a) {
			t.Error("a not served once the hold of its crash has passed")
		}
		if counts, _ := r.log.refusals(); counts["per_source"] != 4 {
			t.Errorf("logged: got %v, want 4 per_source refusals", counts)
		}
		shutdown(t, r.s)
	})
}

// TestStreamRefusalsDoNotStarve: a flood of connections from an address
// not in only_from is closed without a start, and a connection queued
// behind it is served; the refusals are logged in a few lines that count
// them all.
func TestStreamRefusalsDoNotStarve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := clients[0], clients[1]
		f := newFakeProcs()
		svc := streamService("s", 7000, 1)
		svc.OnlyFrom = []netip.Prefix{netip.PrefixFrom(b, 32)}
		r := newStreamRig(t, f, svc)
		const flood = 5000
		for range flood {
			r.fs.connect(7000, a)
		}
		if !r.connect(b) {
			t.Fatal("b not served behind the flood")
		}
		if n := len(f.startTimes()); n != 1 {
			t.Errorf("got %d starts, want b's only", n)
		}
		if st := r.status(); st.Refused != (Refused{OnlyFrom: flood}) {
			t.Errorf("got refused %+v, want %d only_from refusals", st.Refused, flood)
		}
		time.Sleep(refusalLogEvery) // the line of the refusals left
		synctest.Wait()
		if counts, lines := r.log.refusals(); counts["only_from"] != flood || lines > 2 {
			t.Errorf("logged: got %v in %d lines, want %d only_from refusals in at most 2", counts, lines, flood)
		}
		shutdown(t, r.s)
	})
}

// TestStreamRate: rate=N/DUR admits a burst of N from an address, then
// one every DUR/N; another address has its own bucket.
func TestStreamRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := clients[0], clients[1]
		f := newFakeProcs()
		f.script = func(int) (time.Duration, unix.WaitStatus, bool) { return 0, exitCode(0), true }
		svc := streamService("s", 7000, 8)
		svc.Rate = conffmt.Rate{N: 2, Per: time.Second}
		r := newStreamRig(t, f, svc)
		r.burst(a, 4, 2)
		if !r.connect(b) {
			t.Fatal("b not served: its bucket is not a's")
		}
		time.Sleep(500 * time.Millisecond)
		if !r.connect(a) || r.connect(a) {
			t.Error("after half the period: want one more connection from a served, then none")
		}
		if st := r.status(); st.Refused != (Refused{Rate: 3}) {
			t.Errorf("got refused %+v, want 3 rate refusals", st.Refused)
		}
		shutdown(t, r.s)
	})
}

// TestStreamAdmissionReload: new admission limits apply to the next
// connections without touching the running instances.
func TestStreamAdmissionReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := clients[0]
		f := newFakeProcs()
		svc := streamService("s", 7000, 8)
		svc.PerSource = 1
		r := newStreamRig(t, f, svc)
		r.burst(a, 2, 1)
		before := f.pids()
		svc.PerSource = 3
		r.s.Reload([]conffmt.Service{svc})
		synctest.Wait()
		if !r.connect(a) {
			t.Error("per_source=3 after a reload: a's second connection refused")
		}
		svc.OnlyFrom = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		r.s.Reload([]conffmt.Service{svc})
		synctest.Wait()
		if r.connect(a) {
			t.Error("only_from without a after a reload: a served")
		}
		if pids := f.pids(); len(pids) != 2 || pids[0] != before[0] {
			t.Errorf("instances after the reloads: got %v, want %v and one more", pids, before)
		}
		if st := r.status(); st.Refused != (Refused{PerSource: 1, OnlyFrom: 1}) {
			t.Errorf("got refused %+v, want one per_source and one only_from refusal", st.Refused)
		}
		shutdown(t, r.s)
	})
}

// TestStreamRetries: retries= fails a stream service only on crashes
// that count toward the service's backoff, those from several addresses:
// one client crashing every connection cannot make it fail.
func TestStreamRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := clients[0], clients[1]
		f := newFakeProcs()
		svc := streamService("s", 7000, 8)
		svc.Retries = 2
		r := newStreamRig(t, f, svc)
		for range 5 { // one address: its crashes are its own
			if !r.connect(a) {
				t.Fatal("a not served")
			}
			f.end(f.pids()[0], exitCode(1))
			synctest.Wait()
			time.Sleep(time.Minute) // past its hold
			synctest.Wait()
		}
		if st := r.status(); st.State == "failed" {
			t.Fatalf("failed on the crashes of one address: %+v", st)
		}
		for _, addr := range []netip.Addr{a, b, a, b} {
			if !r.fs.connect(7000, addr) {
				break // the socket is closed: it failed
			}
			synctest.Wait()
			pids := f.pids()
			if len(pids) == 0 {
				time.Sleep(time.Minute) // the service's own hold
				synctest.Wait()
				if pids = f.pids(); len(pids) == 0 {
					break
				}
			}
			f.end(pids[0], exitCode(1))
			synctest.Wait()
		}
		st := r.status()
		if st.State != "failed" || st.Ready {
			t.Fatalf("after crashes from two addresses: got state %s (%s), want failed", st.State, st.Reason)
		}
		if r.fs.connect(7000, b) {
			t.Error("a failed stream service still listens")
		}
		shutdown(t, r.s)
	})
}
