package tests

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freePort returns a TCP port that was free on 127.0.0.1 and ::1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if l6, err := net.Listen("tcp6", fmt.Sprintf("[::1]:%d", port)); err == nil {
			l6.Close()
			return port
		}
	}
	t.Fatal("cannot find a free port")
	return 0
}

// dial connects with a deadline on every later read and write.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatalf("cannot connect to %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(waitLimit))
	t.Cleanup(func() { c.Close() })
	return c
}

// waitListening waits for the "listening" event of svc.
func (m *instance) waitListening(svc string) {
	m.t.Helper()
	m.waitEvent(1, svc+" to listen", msg("listening", svc))
}

func TestStreamEcho(t *testing.T) {
	port := freePort(t)
	conf := fmt.Sprintf("echo stream port=%d addr=127.0.0.1 /bin/cat\n", port)
	m := startMetad(t, runOpts{conf: conf})
	m.waitListening("echo")
	c := dial(t, fmt.Sprintf("127.0.0.1:%d", port))
	fmt.Fprintln(c, "hello, metad")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello, metad\n" {
		t.Errorf("got %q, %v; want the line echoed", got, err)
	}
}

func TestStreamEnvironment(t *testing.T) {
	port := freePort(t)
	conf := fmt.Sprintf("env stream port=%d /usr/bin/env\n", port)
	m := startMetad(t, runOpts{conf: conf})
	m.waitListening("env")
	for _, host := range []string{"127.0.0.1", "::1"} {
		c := dial(t, net.JoinHostPort(host, strconv.Itoa(port)))
		out, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				env[k] = v
			}
		}
		local := c.LocalAddr().(*net.TCPAddr)
		want := map[string]string{
			"PROTO":         "TCP",
			"TCPREMOTEIP":   host,
			"TCPREMOTEPORT": strconv.Itoa(local.Port),
			"TCPLOCALIP":    host,
			"TCPLOCALPORT":  strconv.Itoa(port),
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s: got %s=%q, want %q", host, k, env[k], v)
			}
		}
	}
}

// TestStreamMax has 20 clients on a max=4 service: each instance greets
// its client and waits for a line. The test releases one client at a time
// and checks that never more than four are greeted and unreleased.
func TestStreamMax(t *testing.T) {
	port, other := freePort(t), freePort(t)
	conf := fmt.Sprintf("limited stream port=%d addr=127.0.0.1 max=4 /bin/sh -c 'echo hello; read x; echo bye'\n", port) +
		fmt.Sprintf("other stream port=%d addr=127.0.0.1 /bin/echo pong\n", other)
	m := startMetad(t, runOpts{conf: conf})
	m.waitListening("limited")
	m.waitListening("other")
	const clients = 20
	greeted := make(chan int, clients)
	conns := make([]net.Conn, clients)
	readers := make([]*bufio.Reader, clients)
	for i := range conns {
		conns[i] = dial(t, fmt.Sprintf("127.0.0.1:%d", port))
		readers[i] = bufio.NewReader(conns[i])
		go func() {
			if line, err := readers[i].ReadString('\n'); err == nil && line == "hello\n" {
				greeted <- i
			}
		}()
	}
	active := map[int]bool{}
	served := 0
	for served < clients {
		select {
		case i := <-greeted:
			active[i] = true
			if len(active) > 4 {
				t.Fatalf("%d clients greeted at once, want at most 4", len(active))
			}
			continue
		default:
		}
		if len(active) < 4 && served+len(active) < clients {
			// Wait for the next greeting; then check that no other slipped in,
			// with a round trip on another service as the barrier.
			select {
			case i := <-greeted:
				active[i] = true
			case <-time.After(waitLimit):
				t.Fatalf("timed out with %d served and %d active", served, len(active))
			}
			c := dial(t, fmt.Sprintf("127.0.0.1:%d", other))
			if b, _ := io.ReadAll(c); string(b) != "pong\n" {
				t.Fatalf("other service: got %q, want pong", b)
			}
			continue
		}
		for i := range active { // release one
			fmt.Fprintln(conns[i], "done")
			rest, _ := io.ReadAll(readers[i])
			if string(rest) != "bye\n" {
				t.Fatalf("client %d: got %q, want bye", i, rest)
			}
			delete(active, i)
			served++
			break
		}
	}
}

// TestStreamCrashFloodBacksOff floods a service whose program fails at
// once: the crashed instances hold their slot for the backoff delay, so
// the spawns follow 1, 2, 4 s and the other service keeps serving.
func TestStreamCrashFloodBacksOff(t *testing.T) {
	port, other := freePort(t), freePort(t)
	conf := fmt.Sprintf("broken stream port=%d addr=127.0.0.1 max=1 /bin/false\n", port) +
		fmt.Sprintf("other stream port=%d addr=127.0.0.1 /bin/echo pong\n", other)
	m := startMetad(t, runOpts{conf: conf})
	m.waitListening("broken")
	for range 100 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("connection refused by metad: %v", err)
		}
		defer c.Close()
	}
	third := m.waitEvent(3, "the third backoff", msg("backoff", "broken"))
	if d := third.str("delay"); d != "4s" {
		t.Errorf("third backoff: got delay %s, want 4s", d)
	}
	exits := m.matching(msg("exited", "broken"))
	if len(exits) != 3 {
		t.Errorf("got %d runs before the third backoff, want 3", len(exits))
	}
	gaps := []time.Duration{time.Second, 2 * time.Second}
	for i, g := range gaps {
		if d := eventTime(t, exits[i+1]).Sub(eventTime(t, exits[i])); d < g-50*time.Millisecond {
			t.Errorf("run %d came %v after the one before, want at least %v", i+2, d, g)
		}
	}
	c := dial(t, fmt.Sprintf("127.0.0.1:%d", other))
	if b, _ := io.ReadAll(c); string(b) != "pong\n" {
		t.Errorf("other service during the flood: got %q, want pong", b)
	}
}

func TestListenerContract(t *testing.T) {
	port := freePort(t)
	conf := fmt.Sprintf("sock listener port=%d addr=127.0.0.1 %s\n", port, strings.Join(helper("listen-check", strconv.Itoa(port), "sock"), " "))
	m := startMetad(t, runOpts{conf: conf})
	m.waitListening("sock")
	if n := m.count(msg("started", "sock")); n != 0 {
		t.Fatalf("listener started %d times before any connection, want 0", n)
	}
	for round := 1; round <= 2; round++ {
		c := dial(t, fmt.Sprintf("127.0.0.1:%d", port))
		out, err := io.ReadAll(c)
		if err != nil || string(out) != "ok\n" {
			t.Fatalf("round %d: got %q, %v from the listener, want ok", round, out, err)
		}
		m.waitEvent(round, "the listener to exit", msg("exited", "sock"))
	}
	if n := m.count(msg("started", "sock")); n != 2 {
		t.Errorf("got %d starts, want 2 (one per connection after an exit)", n)
	}
}

func TestSocketChildDescriptors(t *testing.T) {
	dir := t.TempDir()
	sport, lport := freePort(t), freePort(t)
	sout, lout := filepath.Join(dir, "stream"), filepath.Join(dir, "listener")
	conf := fmt.Sprintf("s stream port=%d addr=127.0.0.1 %s\n", sport, strings.Join(helper("list-fds", sout), " ")) +
		fmt.Sprintf("l listener port=%d addr=127.0.0.1 %s\n", lport, strings.Join(helper("list-fds", lout), " "))
	m := startMetad(t, runOpts{conf: conf})
	m.waitListening("s")
	m.waitListening("l")
	io.ReadAll(dial(t, fmt.Sprintf("127.0.0.1:%d", sport)))
	m.waitEvent(1, "the stream instance to exit", msg("exited", "s"))
	dial(t, fmt.Sprintf("127.0.0.1:%d", lport))
	m.waitEvent(1, "the listener to exit", msg("exited", "l"))
	for _, tt := range []struct{ file, want string }{{sout, "fds=0,1,2 "}, {lout, "fds=0,1,2,3 "}} {
		b, err := os.ReadFile(tt.file)
		if err != nil || !strings.HasPrefix(string(b), tt.want) {
			t.Errorf("%s: got %q, %v; want it to start with %q", filepath.Base(tt.file), b, err, tt.want)
		}
	}
}

// TestInheritedSocket hands metad a listening socket the systemd way and
// checks that a stream service serves on it without binding anew.
func TestInheritedSocket(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "metad.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("echo stream port=%d addr=127.0.0.1 /bin/cat\n", port)), 0o644)
	// LISTEN_PID must be metad's own pid: the shell sets it and execs.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=echo exec "$0" "$@"`,
		metadBin, "--log-format", "json", "-f", conf, "-s", filepath.Join(dir, "sock"))
	cmd.ExtraFiles = []*os.File{f}
	m := launch(t, cmd, dir)
	f.Close()
	m.waitEvent(1, "the inherited socket to be used", msg("using inherited socket", "echo"))
	c := dial(t, fmt.Sprintf("127.0.0.1:%d", port))
	fmt.Fprintln(c, "inherited")
	c.(*net.TCPConn).CloseWrite()
	if got, _ := io.ReadAll(c); string(got) != "inherited\n" {
		t.Errorf("got %q, want the line echoed", got)
	}
	if n := m.count(msg("cannot listen")); n != 0 {
		t.Errorf("metad tried to bind anew %d times", n)
	}
}

func TestDisabledSocketRefuses(t *testing.T) {
	sport, lport := freePort(t), freePort(t)
	conf := fmt.Sprintf("s stream port=%d addr=127.0.0.1 disabled /bin/echo served\n", sport) +
		fmt.Sprintf("l listener port=%d addr=127.0.0.1 disabled %s\n", lport, strings.Join(helper("listen-check", strconv.Itoa(lport), "l"), " "))
	m := startMetad(t, runOpts{conf: conf})
	refused := func(port int) {
		t.Helper()
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			t.Fatalf("port %d: connected to a disabled service, want connection refused", port)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("port %d: got %v, want connection refused", port, err)
		}
	}
	m.waitEvent(1, "metad to start", msg("metad started"))
	refused(sport)
	refused(lport)
	if _, errOut, status := m.metac("enable", "s", "l"); status != 0 {
		t.Fatalf("metac enable: %s", errOut)
	}
	m.waitListening("s")
	m.waitListening("l")
	if b, _ := io.ReadAll(dial(t, fmt.Sprintf("127.0.0.1:%d", sport))); string(b) != "served\n" {
		t.Errorf("stream after enable: got %q, want served", b)
	}
	if b, _ := io.ReadAll(dial(t, fmt.Sprintf("127.0.0.1:%d", lport))); string(b) != "ok\n" {
		t.Errorf("listener after enable: got %q, want ok", b)
	}
	if _, errOut, status := m.metac("disable", "s", "l"); status != 0 {
		t.Fatalf("metac disable: %s", errOut)
	}
	m.waitEvent(1, "the stream socket to close", msg("closed socket", "s"))
	m.waitEvent(1, "the listener socket to close", msg("closed socket", "l"))
	// The listener's instance holds the socket too until it has exited,
	// just after it answered.
	m.waitEvent(1, "the listener's instance to exit", msg("exited", "l"))
	refused(sport)
	refused(lport)
}

// TestStreamLeavesNoDescriptor checks that connections leave no descriptor
// behind in metad.
func TestStreamLeavesNoDescriptor(t *testing.T) {
	port := freePort(t)
	m := startMetad(t, runOpts{conf: fmt.Sprintf("e stream port=%d addr=127.0.0.1 /bin/echo hi\n", port)})
	m.waitListening("e")
	fds := func() int {
		entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", m.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	roundTrip := func() {
		if b, _ := io.ReadAll(dial(t, fmt.Sprintf("127.0.0.1:%d", port))); string(b) != "hi\n" {
			t.Fatalf("got %q, want hi", b)
		}
	}
	roundTrip()
	m.waitEvent(1, "the first instance to exit", msg("exited", "e"))
	before := fds()
	for range 200 {
		roundTrip()
	}
	m.waitEvent(201, "every instance to exit", msg("exited", "e"))
	if after := fds(); after != before {
		t.Errorf("metad has %d descriptors after 200 connections, had %d before", after, before)
	}
}
