package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// notifyScript is a program speaking the sd_notify wire format itself:
// it waits until its gate (a FIFO) is opened, sends one datagram to
// $NOTIFY_SOCKET with STATUS=TEXT, and READY=1 when told to, then
// becomes `sleep MARKER`.
// Usage: notify.py GATE TEXT ready|status-only MARKER.
const notifyScript = `import os, socket, sys
gate, text, mode, marker = sys.argv[1:5]
with open(gate) as f:
    f.read()
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
msg = "STATUS=" + text
if mode == "ready":
    msg += "\nREADY=1"
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(msg.encode(), addr)
s.close()
os.execvp("sleep", ["sleep", marker])
`

// lateServerScript is a TCP server that binds only once its gate (a
// FIFO) is opened. Usage: late_server.py GATE PORT MARKER; MARKER only
// names the process.
const lateServerScript = `import socket, sys
gate, port = sys.argv[1], int(sys.argv[2])
with open(gate) as f:
    f.read()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
while True:
    c, _ = s.accept()
    c.close()
`

// pythonBin returns the Python 3 interpreter for the programs that speak
// a protocol themselves, skipping the test when there is none.
func pythonBin(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	p, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("needs python3")
	}
	return p
}

// writeProgram writes text to dir/name and returns its path.
func writeProgram(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// newGate makes a FIFO in dir that a service program blocks on (`read x
// < GATE` in sh, open().read() in Python) until openGate releases it:
// the program's delay is decided by the test, not by a clock.
func newGate(t *testing.T, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// openGate releases the program blocked on gate: it opens the FIFO for
// writing (which waits for the reader), writes a line and closes it. It
// fails the test if no reader opens the FIFO within waitLimit.
func openGate(t *testing.T, gate string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(gate, os.O_WRONLY, 0)
		if err != nil {
			done <- err
			return
		}
		_, err = f.WriteString("go\n")
		f.Close()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cannot open gate %s: %v", gate, err)
		}
	case <-time.After(waitLimit):
		// Unblock the goroutine's open with a reader of our own.
		if f, err := os.OpenFile(gate, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			defer f.Close()
		}
		t.Fatalf("no program opened gate %s within %v", gate, waitLimit)
	}
}

// withArg matches the live processes that have arg among their arguments.
func withArg(arg string) func(proc) bool {
	return func(p proc) bool { return slices.Contains(p.argv[1:], arg) }
}

// stateTo matches the state lines of svc that enter state to.
func stateTo(svc, to string) func(event) bool {
	return func(ev event) bool {
		return ev.str("message") == "state" && ev.str("svc") == svc && ev.str("to") == to
	}
}

// index returns the position in the log of the first event that matches,
// or -1 when none has so far.
func (m *instance) index(match func(event) bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.IndexFunc(m.events, match)
}

// statusJSON runs metac --json status name and returns the service as the
// JSON object metac printed.
func (c ctl) statusJSON(name string) map[string]any {
	c.t.Helper()
	out, errOut, status := c.run("--json", "status", name)
	var h struct {
		OK       bool             `json:"ok"`
		Services []map[string]any `json:"services"`
	}
	line, _, _ := strings.Cut(out, "\n")
	if err := json.Unmarshal([]byte(line), &h); err != nil || status != 0 || !h.OK || len(h.Services) != 1 {
		c.t.Fatalf("metac --json status %s: got status %d, stdout %q, stderr %q, %v; want 0 and one service", name, status, out, errOut, err)
	}
	return h.Services[0]
}

// statusText runs metac status name and returns what it printed, failing
// the test unless it succeeded.
func (c ctl) statusText(name string) string {
	c.t.Helper()
	out, errOut, status := c.run("status", name)
	if status != 0 {
		c.t.Fatalf("metac status %s: got status %d, stdout %q, stderr %q; want 0", name, status, out, errOut)
	}
	return out
}

// jsonStr and jsonInt read a field of a decoded JSON object.
func jsonStr(v map[string]any, key string) string {
	s, _ := v[key].(string)
	return s
}

func jsonInt(v map[string]any, key string) int {
	n, _ := v[key].(float64)
	return int(n)
}

// environOf returns the environment of process pid.
func environOf(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatalf("cannot read the environment of %d: %v", pid, err)
	}
	env := make(map[string]string)
	for _, kv := range bytes.Split(b, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			env[k] = v
		}
	}
	return env
}

// sendNotify sends text as one datagram to a NOTIFY_SOCKET address (a
// path, or an abstract name written with a leading "@", which Go maps to
// the leading NUL itself).
func sendNotify(t *testing.T, addr, text string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("cannot reach NOTIFY_SOCKET %q: %v", addr, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(text)); err != nil {
		t.Fatalf("cannot send to NOTIFY_SOCKET %q: %v", addr, err)
	}
}

// datagram is one message a parentSocket received, and when.
type datagram struct {
	text string
	at   time.Time
}

// parentSocket is a service manager's NOTIFY_SOCKET, as systemd gives a
// Type=notify service: a datagram socket bound to a path that records
// what arrives.
type parentSocket struct {
	t    *testing.T
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	cond *sync.Cond
	got  []datagram
}

// newParentSocket binds a datagram socket in dir and records what it
// receives until the end of the test.
func newParentSocket(t *testing.T, dir string) *parentSocket {
	t.Helper()
	path := filepath.Join(dir, "parent.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	p := &parentSocket{t: t, path: path, conn: conn}
	p.cond = sync.NewCond(&p.mu)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Logf("parent NOTIFY_SOCKET: %v", err)
				}
				return
			}
			at := time.Now()
			p.mu.Lock()
			p.got = append(p.got, datagram{string(buf[:n]), at})
			p.cond.Broadcast()
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return p
}

// hasLine reports whether a datagram carries line (a KEY=VALUE
// assignment) on a line of its own.
func hasLine(text, line string) bool {
	return slices.Contains(strings.Split(text, "\n"), line)
}

// hasKey reports whether a datagram assigns key.
func hasKey(text, key string) bool {
	return slices.ContainsFunc(strings.Split(text, "\n"), func(l string) bool { return strings.HasPrefix(l, key+"=") })
}

// index returns the position of the first datagram received that
// matches, or -1 when none has so far.
func (p *parentSocket) index(match func(string) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.IndexFunc(p.got, func(d datagram) bool { return match(d.text) })
}

// wait waits for the first datagram that matches and returns its
// position and the datagram; it fails the test after waitLimit.
func (p *parentSocket) wait(what string, match func(string) bool) (int, datagram) {
	p.t.Helper()
	i := -1
	condWait(&p.mu, p.cond, waitLimit, func() bool {
		i = slices.IndexFunc(p.got, func(d datagram) bool { return match(d.text) })
		return i >= 0
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if i < 0 {
		texts := make([]string, len(p.got))
		for k, d := range p.got {
			texts[k] = fmt.Sprintf("%q", d.text)
		}
		p.t.Fatalf("timed out after %v waiting for %s on the parent NOTIFY_SOCKET; got [%s]", waitLimit, what, strings.Join(texts, " "))
	}
	return i, p.got[i]
}

// await waits for the n-th (from 1) log event that matches and returns
// it, as waitEvent does, but fails the test as soon as metad has exited
// without logging it (a config it refused, a crash) instead of at the
// deadline.
func (m *instance) await(n int, what string, match func(event) bool) event {
	m.t.Helper()
	var found event
	var exited bool
	var status int
	ok := m.waitCond(waitLimit, func() bool {
		seen := 0
		for _, ev := range m.events {
			if match(ev) {
				if seen++; seen == n {
					found = ev
					return true
				}
			}
		}
		exited, status = m.done, m.status
		return exited
	})
	switch {
	case found != nil:
		return found
	case !ok:
		m.t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
	default:
		m.t.Fatalf("metad exited with status %d before %s", status, what)
	}
	return nil
}

// waitStatus runs metac --json status name until cond holds of the
// service, for at most waitLimit, and returns the service. A service's
// state and reason follow events in other services (a dependency that
// failed) a moment after those are logged: there is no event of the
// change to wait for, only the answer to ask again.
func (c ctl) waitStatus(name, what string, cond func(s map[string]any) bool) map[string]any {
	c.t.Helper()
	var s map[string]any
	if !pollUntil(waitLimit, func() bool {
		s = c.statusJSON(name)
		return cond(s)
	}) {
		c.t.Fatalf("timed out after %v waiting for metac status %s to say %s; last got state %q, reason %q, in %v",
			waitLimit, name, what, jsonStr(s, "state"), jsonStr(s, "reason"), s)
	}
	return s
}
