package supervise

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
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
