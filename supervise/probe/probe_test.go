package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
)

// The test binary re-runs itself as the commands of exec: probes: with
// helperEnv set, TestMain runs the helper its first argument names.
const helperEnv = "PROBE_TEST_HELPER"

// patience bounds each wait of these tests for a probe or a process:
// they take milliseconds, so only a failing test waits this long.
const patience = 10 * time.Second

// short is the timeout of probes that are meant to run out of time.
const short = 300 * time.Millisecond

// reaper starts the helpers of the tests, as metad's reaper starts the
// commands of probes; the test process is a subreaper, as metad is, so
// that it reaps what the helpers leave.
var reaper *initsys.Reaper

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper(os.Args[1], os.Args[2:]))
	}
	for _, err := range []error{initsys.SetSubreaper(), initsys.CloseOnExecAll()} {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	reaper = initsys.NewReaper(zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { reaper.Run(ctx) })
	code := m.Run()
	cancel()
	wg.Wait()
	os.Exit(code)
}

// runHelper runs the helper name and returns its exit status.
func runHelper(name string, args []string) int {
	switch name {
	case "exit": // exit CODE [LINE...]: LINEs on standard error
		for _, l := range args[1:] {
			fmt.Fprintln(os.Stderr, l)
		}
		code, _ := strconv.Atoi(args[0])
		return code
	case "lots": // more output than is kept, the last line on standard output
		fmt.Fprint(os.Stderr, strings.Repeat("noise\n", 4*tailSize))
		fmt.Println("the end")
		fmt.Println()
		return 1
	case "sleep": // until killed
		for {
			time.Sleep(time.Hour)
		}
	case "where": // where DIR: checks what a command is given
		return where(args[0])
	case "grandchild": // grandchild SOCKET: starts one in its group, tells its pid, sleeps
		cmd := exec.Command(os.Args[0], "sleep")
		cmd.Stdout = os.Stdout // holds the output pipe open
		if err := cmd.Start(); err != nil {
			fmt.Println(err)
			return 1
		}
		c, err := net.Dial("unix", args[0])
		if err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Fprintln(c, cmd.Process.Pid)
		c.Close()
		for {
			time.Sleep(time.Hour)
		}
	}
	fmt.Fprintln(os.Stderr, "unknown helper", name)
	return 2
}

// where checks the command's directory, environment, standard input
// and session.
func where(dir string) int {
	fail := func(format string, a ...any) int {
		fmt.Printf(format+"\n", a...)
		return 1
	}
	if wd, err := os.Getwd(); err != nil || wd != dir {
		return fail("working directory: got %q, %v, want %q", wd, err, dir)
	}
	if v := os.Getenv("PROBE_X"); v != "y" {
		return fail("PROBE_X: got %q, want y", v)
	}
	if b, err := io.ReadAll(os.Stdin); err != nil || len(b) != 0 {
		return fail("standard input: got %q, %v, want nothing", b, err)
	}
	if sid, err := unix.Getsid(0); err != nil || sid != os.Getpid() {
		return fail("session: got %d, %v, want its own, %d", sid, err, os.Getpid())
	}
	return 0
}

// helperEnviron is the environment of the helpers.
func helperEnviron(more ...string) []string {
	// GORACE: a race-enabled binary waits a second at exit unless told not to.
	return append(os.Environ(), append([]string{helperEnv + "=1", "GORACE=atexit_sleep_ms=0"}, more...)...)
}

// helper returns the exec: probe running the helper with args.
func helper(t *testing.T, args ...string) conffmt.Probe {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return conffmt.Probe{Kind: conffmt.ProbeExec, Argv: append([]string{bin}, args...), Text: "exec:helper " + strings.Join(args, " ")}
}

// try runs p with timeout, through the reaper, and returns its error.
func try(t *testing.T, p conffmt.Probe, timeout time.Duration, proc initsys.Proc) error {
	t.Helper()
	if proc.Env == nil {
		proc.Env = helperEnviron()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := Run(ctx, p, Exec{Spawner: reaper, Proc: proc})
	if took := time.Since(start); took > timeout+killPatience {
		t.Errorf("Run took %v, want at most the timeout, %v, and %v more", took, timeout, killPatience)
	}
	return err
}

func TestTCP(t *testing.T) {
	// A listener that never accepts: the kernel completes the
	// connection all the same.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := conffmt.Probe{Kind: conffmt.ProbeTCP, Addr: netip.MustParseAddrPort(ln.Addr().String())}
	if err := try(t, p, patience, initsys.Proc{}); err != nil {
		t.Errorf("a listener: got %v, want nil", err)
	}

	ln.Close() // nothing listens there now
	err = try(t, p, patience, initsys.Proc{})
	if want := fmt.Sprintf("cannot connect to %s: connection refused", p.Addr); err == nil || err.Error() != want || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("nothing listening: got %v, want %q", err, want)
	}
}

// TestTCPNoAnswer connects to a listener whose queue is full: the
// kernel drops the connection's SYN, and the probe runs out of time.
func TestTCPNoAnswer(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil { // a queue of one
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	full, err := net.DialTimeout("tcp", addr.String(), patience)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()

	err = try(t, conffmt.Probe{Kind: conffmt.ProbeTCP, Addr: addr}, short, initsys.Proc{})
	if want := fmt.Sprintf("cannot connect to %s: no answer in %v", addr, short); err == nil || err.Error() != want || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestHTTP(t *testing.T) {
	var failed atomic.Int32
	var ua atomic.Value
	var closing atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		ua.Store(r.UserAgent())
		closing.Store(r.Close)
		fmt.Fprintln(w, "fine")
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/fail", http.StatusFound)
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		failed.Add(1)
		http.Error(w, "database down", http.StatusInternalServerError)
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // the client has gone
	})
	mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 32<<10))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tls := httptest.NewTLSServer(mux)
	defer tls.Close()
	get := func(url string) conffmt.Probe { return conffmt.Probe{Kind: conffmt.ProbeHTTP, URL: url} }

	if err := try(t, get(srv.URL+"/ok"), patience, initsys.Proc{}); err != nil {
		t.Errorf("200: got %v, want nil", err)
	}
	if got := ua.Load(); got != "metad" {
		t.Errorf("User-Agent: got %q, want metad", got)
	}
	if !closing.Load() {
		t.Error("got a request that keeps its connection, want Connection: close")
	}
	if err := try(t, get(srv.URL+"/redirect"), patience, initsys.Proc{}); err != nil || failed.Load() != 0 {
		t.Errorf("302: got %v and %d requests for the redirect's target, want nil and none", err, failed.Load())
	}
	err := try(t, get(srv.URL+"/fail"), patience, initsys.Proc{})
	if want := "GET " + srv.URL + "/fail: 500 Internal Server Error"; err == nil || err.Error() != want {
		t.Errorf("500: got %v, want %q", err, want)
	}
	err = try(t, get(srv.URL+"/hang"), short, initsys.Proc{})
	if want := fmt.Sprintf("GET %s/hang: no answer in %v", srv.URL, short); err == nil || err.Error() != want || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a hung handler: got %v, want %q", err, want)
	}
	// An endless answer is not read to its end: the probe returns well
	// before its time is up.
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := Run(ctx, get(srv.URL+"/huge"), Exec{}); err != nil || ctx.Err() != nil {
		t.Errorf("an endless body: got %v, %v, want nil in time", err, ctx.Err())
	}
	if err := try(t, get(tls.URL+"/ok"), patience, initsys.Proc{}); err != nil {
		t.Errorf("https with a certificate of its own: got %v, want nil", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "http://" + ln.Addr().String() + "/health"
	ln.Close()
	err = try(t, get(gone), patience, initsys.Proc{})
	if want := "GET " + gone + ": connection refused"; err == nil || err.Error() != want {
		t.Errorf("nothing listening: got %v, want %q", err, want)
	}
}

func TestExecStatus(t *testing.T) {
	if err := try(t, helper(t, "exit", "0", "all is well"), patience, initsys.Proc{}); err != nil {
		t.Errorf("exit 0: got %v, want nil", err)
	}
	p := helper(t, "exit", "1", "first line", "something broke", "")
	err := try(t, p, patience, initsys.Proc{})
	if want := p.Text + ": exit status 1: something broke"; err == nil || err.Error() != want {
		t.Errorf("exit 1: got %v, want %q", err, want)
	}
	p = helper(t, "lots")
	err = try(t, p, patience, initsys.Proc{})
	if want := p.Text + ": exit status 1: the end"; err == nil || err.Error() != want {
		t.Errorf("much output: got %v, want %q", err, want)
	}
}

func TestExecWhere(t *testing.T) {
	dir := t.TempDir()
	proc := initsys.Proc{Dir: dir, Env: helperEnviron("PROBE_X=y")}
	if err := try(t, helper(t, "where", dir), patience, proc); err != nil {
		t.Error(err)
	}
}

func TestExecLookPath(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(bin, filepath.Join(dir, "probe-helper")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "not-executable"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	proc := initsys.Proc{Env: helperEnviron("PATH=relative:" + dir), Dir: dir}
	for _, tc := range []struct {
		argv []string
		want string // "": success
		code int
	}{
		{argv: []string{"probe-helper", "exit", "0"}},
		{argv: []string{"./probe-helper", "exit", "0"}}, // relative to the command's directory
		{argv: []string{"no-such-command"}, want: `"no-such-command" not found in PATH`, code: 127},
		{argv: []string{"not-executable"}, want: `"not-executable" in PATH is not executable`, code: 126},
		{argv: []string{"./no-such-command"}, want: "no such file or directory", code: 127},
	} {
		p := conffmt.Probe{Kind: conffmt.ProbeExec, Argv: tc.argv}
		err := try(t, p, patience, proc)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: got %v, want nil", tc.argv, err)
		case tc.want == "":
		case err == nil:
			t.Errorf("%q: got nil, want an error", tc.argv)
		case !strings.HasPrefix(err.Error(), fmt.Sprintf("exec:%s: exit status %d: ", tc.argv[0], tc.code)) || !strings.HasSuffix(err.Error(), tc.want):
			t.Errorf("%q: got %q, want exit status %d and %q", tc.argv, err, tc.code, tc.want)
		}
	}
}

func TestExecTimeout(t *testing.T) {
	p := helper(t, "sleep")
	err := try(t, p, short, initsys.Proc{})
	if want := fmt.Sprintf("%s: no answer in %v", p.Text, short); err == nil || err.Error() != want || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want %q", err, want)
	}
}

// TestExecGroupKilled ends a probe whose command has started a process
// of its own, which holds its output open: both are killed, and Run
// returns.
func TestExecGroupKilled(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "pid")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	res := make(chan error, 1)
	go func() {
		res <- Run(ctx, helper(t, "grandchild", sock), Exec{Spawner: reaper, Proc: initsys.Proc{Env: helperEnviron()}})
	}()

	// Once the grandchild has started, the probe is ended.
	ln.SetDeadline(time.Now().Add(patience))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	c.Close()
	pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || perr != nil {
		t.Fatalf("grandchild's pid: got %q, %v, %v", b, err, perr)
	}
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want the context's error", err)
		}
	case <-time.After(patience):
		t.Fatalf("Run has not returned %v after its context was cancelled", patience)
	}

	// The grandchild, orphaned, is the test process's child now.
	ended := make(chan initsys.Exit, 1)
	if err := reaper.Adopt(pid, func(e initsys.Exit) { ended <- e }); err != nil {
		t.Fatalf("grandchild %d: %v", pid, err)
	}
	select {
	case e := <-ended:
		if sig, ok := e.Signaled(); !ok || sig != syscall.SIGKILL {
			t.Errorf("grandchild: got %v, want killed by SIGKILL", e)
		}
	case <-time.After(patience):
		t.Fatalf("grandchild %d still running %v after Run returned", pid, patience)
	}
}

func TestRunRefuses(t *testing.T) {
	ctx := context.Background()
	if err := Run(ctx, conffmt.Probe{Text: "nothing"}, Exec{}); err == nil {
		t.Error("no probe: got nil, want an error")
	}
	if err := Run(ctx, conffmt.Probe{Kind: conffmt.ProbeExec, Argv: []string{"/bin/true"}}, Exec{}); err == nil {
		t.Error("exec: without a Spawner: got nil, want an error")
	}
}

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		writes []string
		want   string
	}{
		{nil, ""},
		{[]string{"\n \n"}, ""},
		{[]string{"one\ntw", "o\n\n"}, "two"},
		{[]string{"  padded \r\n"}, "padded"},
		{[]string{strings.Repeat("x", 3*tailSize) + "\nlast"}, "last"},
		{[]string{strings.Repeat("y", tailSize+10)}, strings.Repeat("y", tailSize)},
		{[]string{"é" + strings.Repeat("z", tailSize-1)}, "\uFFFD" + strings.Repeat("z", tailSize-1)},
	} {
		var tl tail
		for _, w := range tc.writes {
			if n, err := tl.Write([]byte(w)); n != len(w) || err != nil {
				t.Errorf("Write: got %d, %v, want %d, nil", n, err, len(w))
			}
		}
		if got := tl.lastLine(); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.writes, got, tc.want)
		}
	}
}

func TestParseStatus(t *testing.T) {
	for _, tt := range []struct {
		line string
		code int
		text string
		bad  bool
	}{
		{line: "HTTP/1.1 200 OK\r\n", code: 200, text: "200 OK"},
		{line: "HTTP/1.0 302 Found\n", code: 302, text: "302 Found"},
		{line: "HTTP/1.1 503\r\n", code: 503, text: "503"},
		{line: "HTTP/1.1 500 Internal Server Error\r\n", code: 500, text: "500 Internal Server Error"},
		{line: "HTTP/2 200\r\n", bad: true},
		{line: "SSH-2.0-OpenSSH_9.2\r\n", bad: true},
		{line: "HTTP/1.1 2000 OK\r\n", bad: true},
		{line: "HTTP/1.1 abc OK\r\n", bad: true},
		{line: "HTTP/1.1 099 Low\r\n", bad: true},
		{line: "\r\n", bad: true},
	} {
		got, err := parseStatus(tt.line)
		switch {
		case tt.bad && err == nil:
			t.Errorf("%q: got %+v, want an error", tt.line, got)
		case !tt.bad && (err != nil || got.code != tt.code || got.text != tt.text):
			t.Errorf("%q: got %+v, %v, want %d %q", tt.line, got, err, tt.code, tt.text)
		}
	}
}

func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{"HTTP/1.1 200 OK\r\n", "HTTP/1.0 404\n", "HTTP/1.1  200", "garbage"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		st, err := parseStatus(line)
		if err == nil && (st.code < 100 || st.code > 999 || !strings.HasPrefix(line, "HTTP/1.")) {
			t.Errorf("%q: got %+v, want an error", line, st)
		}
	})
}
