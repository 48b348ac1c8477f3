package netctl

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"metad/supervise"
)

// testWait bounds every wait for an event in these tests; it is a
// deadline, not a delay.
const testWait = 10 * time.Second

func TestPeerAllowed(t *testing.T) {
	tests := []struct {
		name      string
		uid, self uint32
		want      bool
	}{
		{"root controls a root metad", 0, 0, true},
		{"root controls a user's metad", 0, 1000, true},
		{"the user controls its own metad", 1000, 1000, true},
		{"another user is refused", 1001, 1000, false},
		{"nobody is refused by a root metad", 65534, 0, false},
	}
	for _, tt := range tests {
		if got := peerAllowed(tt.uid, tt.self); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// serveLocal serves h on a new socket until the test ends, and returns
// the socket's path and a channel closed when ServeLocal has returned.
func serveLocal(t *testing.T, h *Handler) (string, context.CancelFunc, chan struct{}) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "metad.sock")
	l, err := ListenLocal(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		ServeLocal(ctx, l, h, zerolog.Nop())
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return path, cancel, done
}

func TestListenLocalMode(t *testing.T) {
	path, _, _ := serveLocal(t, newTestHandler(newFakeControl(), false))
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("got mode %v, want a socket of mode 0600", fi.Mode())
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".metad-sock-*"))
	if len(left) != 0 {
		t.Errorf("got %v left behind, want no temporary directory", left)
	}
}

func TestListenLocalReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metad.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close() // the file stays; nothing listens: a dead metad's socket
	l, err := ListenLocal(path)
	if err != nil {
		t.Fatalf("got %v, want the stale socket replaced", err)
	}
	l.close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("after close: got %v, want the socket file removed", err)
	}
}

func TestListenLocalRefuses(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"a live socket", live, "another metad is listening"},
		{"a regular file", plain, "not a socket"},
		{"a file for a directory", filepath.Join(plain, "metad.sock"), "not a directory"},
	}
	for _, tt := range tests {
		_, err := ListenLocal(tt.path)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if b, err := os.ReadFile(plain); err != nil || string(b) != "keep me" {
		t.Errorf("got %q, %v; want the regular file untouched", b, err)
	}
}

func TestServeLocal(t *testing.T) {
	f := newFakeControl("web")
	path, cancel, done := serveLocal(t, newTestHandler(f, false))

	// A peer that connects and says nothing must not hold the server.
	silent, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	r, err := CallLocal(path, Request{Version: protocolVersion, Command: "disable", Args: []string{"web"}}, testWait)
	if err != nil || !r.OK {
		t.Fatalf("got %+v, %v; want an ok reply", r, err)
	}
	r, err = CallLocal(path, Request{Version: protocolVersion, Command: "stop", Args: []string{"nope"}}, testWait)
	if err != nil || r.OK || r.Error != `unknown service "nope"` {
		t.Errorf("got %+v, %v; want the error naming the service", r, err)
	}
	if got := f.callLog(); strings.Join(got, ",") != "disable web,stop nope" {
		t.Errorf("got calls %q, want disable web and stop nope", got)
	}

	tests := []struct {
		name, send, want string
	}{
		{"not JSON", "hello\n", "bad request"},
		{"no end of line", "{", "bad request"},
		{"too long", strings.Repeat(" ", maxLocalRequest+10) + "\n", "bad request"},
	}
	for _, tt := range tests {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(testWait))
		c.Write([]byte(tt.send))
		if tt.send == "{" {
			c.(*net.UnixConn).CloseWrite()
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.Contains(line, tt.want) || !strings.Contains(line, `"ok":false`) {
			t.Errorf("%s: got reply %q, want an error containing %q", tt.name, line, tt.want)
		}
	}

	cancel()
	select {
	case <-done:
	case <-time.After(testWait):
		t.Fatal("ServeLocal did not return after its context ended")
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("after ServeLocal: got %v, want the socket file removed", err)
	}
	if _, err := CallLocal(path, Request{Version: protocolVersion, Command: "list"}, testWait); err == nil {
		t.Errorf("got a reply after ServeLocal returned, want none")
	}
}

// slowList is a controller whose List waits for release, telling entered
// first.
type slowList struct {
	*fakeControl
	entered chan struct{}
	release chan struct{}
}

func (s *slowList) List(names ...string) ([]supervise.Status, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.fakeControl.List(names...)
}

// TestQuiesce checks that Quiesce waits for the request being answered
// (or for its context), and that a request made while quiesced is answered
// after resume.
func TestQuiesce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metad.sock")
	l, err := ListenLocal(path)
	if err != nil {
		t.Fatal(err)
	}
	slow := &slowList{fakeControl: newFakeControl("a"), entered: make(chan struct{}, 2), release: make(chan struct{})}
	h := newTestHandler(slow.fakeControl, false)
	h.Controller = slow
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		ServeLocal(ctx, l, h, zerolog.Nop())
		close(served)
	}()
	defer func() {
		cancel()
		<-served
	}()
	call := func() chan error {
		errs := make(chan error, 1)
		go func() {
			r, err := CallLocal(path, Request{Version: protocolVersion, Command: "list"}, testWait)
			if err == nil && !r.OK {
				err = errors.New(r.Error)
			}
			errs <- err
		}()
		return errs
	}

	first := call()
	<-slow.entered
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	resume, err := l.Quiesce(short)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("with a request unanswered: got %v, want %v", err, context.DeadlineExceeded)
	}
	resume()

	quiesced := make(chan func(), 1)
	go func() {
		wait, cancelWait := context.WithTimeout(context.Background(), testWait)
		defer cancelWait()
		resume, err := l.Quiesce(wait)
		if err != nil {
			t.Errorf("Quiesce: %v", err)
		}
		quiesced <- resume
	}()
	close(slow.release)
	resume = <-quiesced
	if err := <-first; err != nil {
		t.Errorf("the request being answered: %v", err)
	}
	second := call() // waits in the backlog
	resume()
	if err := <-second; err != nil {
		t.Errorf("the request made while quiesced: %v", err)
	}
}

func TestServeLocalDebugStacks(t *testing.T) {
	path, _, _ := serveLocal(t, newTestHandler(newFakeControl("web"), false))
	r, err := CallLocal(path, NewRequest("debug", "stacks"), testWait)
	if err != nil || !r.OK || !strings.Contains(r.Stacks, "netctl.ServeLocal(") || !strings.Contains(r.Stacks, "netctl.serveConn(") {
		t.Fatalf("got %v, error %v; want the stacks of the server's goroutines", r, err)
	}
}
