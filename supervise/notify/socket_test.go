package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary re-runs itself as a sender in another process: with
// helperEnv set, TestMain sends its first argument to NOTIFY_SOCKET and
// exits.
const helperEnv = "NOTIFY_TEST_HELPER"

// patience bounds each wait of these tests for a datagram or a process:
// they come within milliseconds, so only a failing test waits this long.
const patience = 10 * time.Second

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		if err := Send(os.Getenv("NOTIFY_SOCKET"), os.Args[1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// recvOne waits for the next datagram on s and returns it.
func recvOne(t *testing.T, s *Socket) Datagram {
	t.Helper()
	stop := make(chan struct{})
	timer := time.AfterFunc(patience, func() { close(stop) })
	defer timer.Stop()
	for {
		d, err := s.Recv()
		if err == nil {
			return d
		}
		if !errors.Is(err, ErrNoDatagram) {
			t.Fatalf("Recv: %v", err)
		}
		if err := s.Wait(stop); err != nil {
			t.Fatalf("no datagram within %v: %v", patience, err)
		}
	}
}

// wantEmpty checks that no datagram is waiting on s.
func wantEmpty(t *testing.T, s *Socket) {
	t.Helper()
	if d, err := s.Recv(); !errors.Is(err, ErrNoDatagram) {
		t.Errorf("Recv: got %+v, %v, want ErrNoDatagram", d, err)
	}
}

// listenT opens a socket for the test, closed at its end: at where if
// that is an absolute path, else abstract for the service called where.
func listenT(t *testing.T, where string) *Socket {
	t.Helper()
	listen := Listen
	if filepath.IsAbs(where) {
		listen = ListenPath
	}
	s, err := listen(where)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// places returns where listenT may open a socket for the test: abstract
// for service, and a path.
func places(t *testing.T, service string) []string {
	return []string{service, filepath.Join(t.TempDir(), "notify")}
}

// self is what a datagram sent by the test process itself carries.
func self() Datagram {
	return Datagram{PID: os.Getpid(), UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
}

func TestAbstract(t *testing.T) {
	s := listenT(t, "web")
	if prefix := fmt.Sprintf("@metad/%d/web/", os.Getpid()); !strings.HasPrefix(s.Addr(), prefix) {
		t.Errorf("Addr: got %q, want %q and a random part", s.Addr(), prefix)
	}
	wantEmpty(t, s)
	if err := Send(s.Addr(), "READY=1\nSTATUS=up\n"); err != nil {
		t.Fatal(err)
	}
	want := self()
	want.Message = Message{Ready: true, Status: "up", HasStatus: true}
	if got := recvOne(t, s); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	wantEmpty(t, s)
}

func TestAbstractNames(t *testing.T) {
	a, b := listenT(t, "web"), listenT(t, "web")
	if a.Addr() == b.Addr() {
		t.Errorf("two sockets for one service: both at %q", a.Addr())
	}
	long := listenT(t, strings.Repeat("x", 200))
	if len(long.Addr()) != maxAddr {
		t.Errorf("a long service name: got %q (%d bytes), want it cut to %d bytes", long.Addr(), len(long.Addr()), maxAddr)
	}
}

func TestPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	s := listenT(t, path)
	if s.Addr() != path {
		t.Errorf("Addr: got %q, want %q", s.Addr(), path)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket file: got %v, %v, want mode 0666", fi.Mode(), err)
	}
	if err := Send(path, "STOPPING=1"); err != nil {
		t.Fatal(err)
	}
	want := self()
	want.Message = Message{Stopping: true}
	if got := recvOne(t, s); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Close: got %v, want the socket file removed", err)
	}
}

func TestPathReplacesStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "notify")
	// A socket file whose socket is gone, as a crashed metad leaves it.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	s := listenT(t, path)
	if err := Send(path, "READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := recvOne(t, s); !got.Message.Ready {
		t.Errorf("got %+v, want READY=1", got)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, "relative/notify", "/" + strings.Repeat("x", maxAddr)} {
		if s, err := ListenPath(p); err == nil {
			s.Close()
			t.Errorf("ListenPath(%q): got no error", p)
		}
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("a file in the way: %v, want it left alone", err)
	}
}

// sendFrom sends state to addr from a new process running the test
// binary bin, as cred's user if not nil, and returns its pid.
func sendFrom(t *testing.T, bin, addr, state string, cred *syscall.Credential) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, state)
	// GORACE: a race-enabled binary waits a second at exit unless told not to.
	cmd.Env = append(os.Environ(), helperEnv+"=1", "NOTIFY_SOCKET="+addr, "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sender: %v: %s", err, out)
	}
	return cmd.Process.Pid
}

func TestOtherProcess(t *testing.T) {
	for _, where := range places(t, "other") {
		t.Run(where, func(t *testing.T) {
			s := listenT(t, where)
			pid := sendFrom(t, os.Args[0], s.Addr(), "READY=1\nMAINPID=77", nil)
			want := Datagram{PID: pid, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Message: Message{Ready: true, MainPID: 77}}
			if got := recvOne(t, s); got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

// TestOtherUser runs the sender as nobody: the credentials are the
// sender's, and a path socket takes datagrams from other users.
func TestOtherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	// A directory nobody can reach, with a copy of the test binary that
	// nobody can run.
	dir, err := os.MkdirTemp("", "notify-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "notify.test")
	copyFile(t, os.Args[0], bin)
	const nobody = 65534
	for _, s := range []*Socket{listenT(t, "nobody"), listenT(t, filepath.Join(dir, "notify"))} {
		pid := sendFrom(t, bin, s.Addr(), "READY=1", &syscall.Credential{Uid: nobody, Gid: nobody})
		want := Datagram{PID: pid, UID: nobody, GID: nobody, Message: Message{Ready: true}}
		if got := recvOne(t, s); got != want {
			t.Errorf("%s: got %+v, want %+v", s.Addr(), got, want)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNoCredentials takes a datagram that was queued before the socket
// asked for credentials: it has none, and PID 0 says so.
func TestNoCredentials(t *testing.T) {
	addr := fmt.Sprintf("@metad-test/%d/nocreds", os.Getpid())
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		t.Fatal(err)
	}
	plainSend(t, addr, "READY=1", nil)
	s, err := FromFD(fd, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, want := recvOne(t, s), (Datagram{Message: Message{Ready: true}}); got.PID != 0 || got.Message != want.Message {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// From now on credentials come.
	if err := Send(addr, "READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := recvOne(t, s); got.PID != os.Getpid() {
		t.Errorf("got %+v, want pid %d", got, os.Getpid())
	}
}

// plainSend sends state to addr from a socket of its own, without
// credentials but with fds, if any.
func plainSend(t *testing.T, addr, state string, fds []int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, []byte(state), oob, &unix.SockaddrUnix{Name: addr}, 0); err != nil {
		t.Fatal(err)
	}
}

func TestTruncated(t *testing.T) {
	s := listenT(t, "big")
	if err := Send(s.Addr(), "READY=1\n"+strings.Repeat("X", MaxDatagram-len("READY=1\n")+1)); err != nil {
		t.Fatal(err)
	}
	want := self()
	want.Truncated = true
	if got := recvOne(t, s); got != want {
		t.Errorf("one byte too long: got %+v, want %+v", got, want)
	}
	// The longest that is read whole.
	if err := Send(s.Addr(), "READY=1\n"+strings.Repeat("X", MaxDatagram-len("READY=1\n"))); err != nil {
		t.Fatal(err)
	}
	want = self()
	want.Message.Ready = true
	if got := recvOne(t, s); got != want {
		t.Errorf("the longest: got %+v, want %+v", got, want)
	}
	wantEmpty(t, s)
}

func TestNotNotification(t *testing.T) {
	s := listenT(t, "nul")
	if err := Send(s.Addr(), "READY=1\x00STATUS=x"); err != nil {
		t.Fatal(err)
	}
	got := recvOne(t, s)
	if got.Err == nil || got.Message != (Message{}) || got.PID != os.Getpid() {
		t.Errorf("got %+v, want an error, no message and the sender", got)
	}
}

// openFDs counts the descriptors of the test process.
func openFDs(t *testing.T) int {
	t.Helper()
	d, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(d)
}

func TestDescriptorsClosed(t *testing.T) {
	s := listenT(t, "fds")
	before := openFDs(t)
	var fds []int
	for range 3 {
		fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	plainSend(t, s.Addr(), "READY=1\nFDSTORE=1", fds)
	for _, fd := range fds {
		unix.Close(fd)
	}
	got := recvOne(t, s)
	if !got.Message.Ready || got.FDs != len(fds) || got.PID != os.Getpid() {
		t.Errorf("got %+v, want READY=1, %d descriptors and the sender", got, len(fds))
	}
	if after := openFDs(t); after != before {
		t.Errorf("descriptors open: got %d after Recv, want %d as before", after, before)
	}
}

func TestWait(t *testing.T) {
	s := listenT(t, "wait")

	stopped := make(chan struct{})
	close(stopped)
	if err := s.Wait(stopped); !errors.Is(err, ErrStopped) {
		t.Errorf("stop closed before: got %v, want ErrStopped", err)
	}

	// Stopped while waiting.
	stop := make(chan struct{})
	res := make(chan error, 1)
	go func() { res <- s.Wait(stop) }()
	close(stop)
	if err := waitResult(t, res); !errors.Is(err, ErrStopped) {
		t.Errorf("stop closed while waiting: got %v, want ErrStopped", err)
	}

	// A stopped wait leaves nothing behind: the next one waits again,
	// until a datagram comes.
	go func() { res <- s.Wait(nil) }()
	if err := Send(s.Addr(), "WATCHDOG=1"); err != nil {
		t.Fatal(err)
	}
	if err := waitResult(t, res); err != nil {
		t.Errorf("a datagram: got %v, want nil", err)
	}
	// Still waiting to be read: Wait returns at once.
	if err := s.Wait(nil); err != nil {
		t.Errorf("a datagram waiting: got %v, want nil", err)
	}
	if got := recvOne(t, s); got.Message.Watchdog != WatchdogPing {
		t.Errorf("got %+v, want WATCHDOG=1", got)
	}

	// Closed while waiting.
	go func() { res <- s.Wait(nil) }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := waitResult(t, res); !errors.Is(err, ErrClosed) {
		t.Errorf("closed while waiting: got %v, want ErrClosed", err)
	}
	if err := s.Wait(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait after Close: got %v, want ErrClosed", err)
	}
	if _, err := s.Recv(); !errors.Is(err, ErrClosed) {
		t.Errorf("Recv after Close: got %v, want ErrClosed", err)
	}
	if _, err := s.Dup(); !errors.Is(err, ErrClosed) {
		t.Errorf("Dup after Close: got %v, want ErrClosed", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: got %v, want ErrClosed", err)
	}
}

func waitResult(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(patience):
		t.Fatalf("Wait has not returned after %v", patience)
		return nil
	}
}

// TestHandover hands a socket to a new Socket as a re-executed metad
// would, through a descriptor without close-on-exec.
func TestHandover(t *testing.T) {
	for _, where := range places(t, "handover") {
		t.Run(where, func(t *testing.T) {
			s := listenT(t, where)
			fd, err := s.Dup()
			if err != nil {
				t.Fatal(err)
			}
			if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC != 0 {
				t.Errorf("duplicate's flags: got %#x, %v, want no close-on-exec", flags, err)
			}
			if !filepath.IsAbs(where) {
				s.Close() // the duplicate keeps the name (a path socket's Close removes its file)
			}
			s2, err := FromFD(fd, s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
				t.Errorf("taken back: got flags %#x, %v, want close-on-exec", flags, err)
			}
			if s2.Addr() != s.Addr() {
				t.Errorf("Addr: got %q, want %q", s2.Addr(), s.Addr())
			}
			if err := Send(s2.Addr(), "RELOADING=1"); err != nil {
				t.Fatal(err)
			}
			if got := recvOne(t, s2); !got.Message.Reloading || got.PID != os.Getpid() {
				t.Errorf("got %+v, want RELOADING=1 from the test", got)
			}
		})
	}
}

func TestFromFDRefuses(t *testing.T) {
	s := listenT(t, "refuse")
	tcp, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	dup, err := s.Dup()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fd   int
		addr string
	}{
		{tcp, "@whatever"},
		{dup, s.Addr() + "x"},
	} {
		if s2, err := FromFD(tc.fd, tc.addr); err == nil {
			s2.Close()
			t.Errorf("FromFD(%d, %q): got no error", tc.fd, tc.addr)
		}
		if _, err := unix.FcntlInt(uintptr(tc.fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
			t.Errorf("FromFD(%d, %q) refused: got %v for its descriptor, want it closed", tc.fd, tc.addr, err)
		}
	}
}

func TestSendErrors(t *testing.T) {
	gone := fmt.Sprintf("@metad-test/%d/nobody-listens", os.Getpid())
	for _, tc := range []struct {
		addr string
		want error // nil: any
	}{
		{"", nil},
		{"@", nil},
		{"relative/path", nil},
		{"vsock:2:1234", nil},
		{"/" + strings.Repeat("x", maxAddr), nil},
		{gone, unix.ECONNREFUSED},
		{filepath.Join(t.TempDir(), "none"), unix.ENOENT},
	} {
		err := Send(tc.addr, "READY=1")
		if prefix := "cannot notify " + strconv.Quote(tc.addr) + ": "; err == nil || !strings.HasPrefix(err.Error(), prefix) {
			t.Errorf("Send(%q): got %v, want an error starting %q", tc.addr, err, prefix)
		} else if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("Send(%q): got %v, want %v", tc.addr, err, tc.want)
		}
	}
}

// TestSendFull fills a receiver's queue: Send fails instead of blocking.
func TestSendFull(t *testing.T) {
	s := listenT(t, "full")
	var err error
	for i := 0; i < 100000 && err == nil; i++ {
		err = Send(s.Addr(), "WATCHDOG=1")
	}
	if !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("got %v, want EAGAIN once the queue is full", err)
	}
	// What was queued is all there.
	n := 0
	for {
		_, err := s.Recv()
		if err != nil {
			break
		}
		n++
	}
	if n == 0 {
		t.Error("got no datagram from a full queue")
	}
}

// TestSystemdNotify sends with systemd's own client. systemd-notify
// waits until the receiver has closed the pipe it sends along
// (sd_notify_barrier), so its success shows that descriptors are
// closed.
func TestSystemdNotify(t *testing.T) {
	const bin = "/usr/bin/systemd-notify"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no %s: %v", bin, err)
	}
	for _, where := range places(t, "systemd-notify") {
		t.Run(where, func(t *testing.T) {
			s := listenT(t, where)
			got := make(chan Datagram, 16)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					for {
						d, err := s.Recv()
						if err != nil {
							break
						}
						got <- d
					}
					if s.Wait(stop) != nil {
						return
					}
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "--ready", "--status=hello world")
			cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+s.Addr())
			out, err := cmd.CombinedOutput()
			close(stop)
			wg.Wait()
			close(got)
			if err != nil {
				t.Fatalf("systemd-notify: %v: %s", err, out)
			}
			ready := false
			for d := range got {
				if d.PID != cmd.Process.Pid && d.PID != os.Getpid() {
					t.Errorf("got %+v, want it from systemd-notify (%d) or its parent (%d)", d, cmd.Process.Pid, os.Getpid())
				}
				if d.Message.Ready {
					ready = true
					if d.Message.Status != "hello world" {
						t.Errorf("got %+v, want STATUS=hello world with READY=1", d)
					}
				}
			}
			if !ready {
				t.Error("got no READY=1")
			}
		})
	}
}
