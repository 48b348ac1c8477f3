package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// waitLimit bounds every wait for an event in these tests. It is a
// deadline, not a delay: waits end as soon as the event happens.
const waitLimit = 20 * time.Second

// event is one JSON log line of metad.
type event map[string]any

func (e event) str(k string) string {
	v, _ := e[k].(string)
	return v
}

func (e event) int(k string) int {
	v, _ := e[k].(float64)
	return int(v)
}

// instance is a running metad under test.
type instance struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string // scratch directory of the test
	mu     sync.Mutex
	cond   *sync.Cond
	events []event
	lines  []string
	done   bool
	status int
}

// runOpts says how to start metad.
type runOpts struct {
	conf string   // config text, written to dir/metad.conf; "" for none
	args []string // extra arguments before any "--"
	cmd  []string // command mode
	pid1 bool     // PID 1 of a new PID (and mount) namespace
	env  []string
	bin  string // the metad binary; "" for the one under test
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a new PID namespace (CI runs as root)")
	}
}

// startMetad starts metad with JSON logs on its stderr, which are parsed
// as they come. The process is killed at the end of the test if it is
// still running.
func startMetad(t *testing.T, o runOpts) *instance {
	t.Helper()
	dir := t.TempDir()
	args := []string{"--log-format", "json", "--log-level", "debug", "-s", filepath.Join(dir, "metad.sock")}
	if o.conf != "" {
		conf := filepath.Join(dir, "metad.conf")
		if err := os.WriteFile(conf, []byte(o.conf), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", conf)
	}
	args = append(args, o.args...)
	if len(o.cmd) > 0 {
		args = append(append(args, "--"), o.cmd...)
	}
	bin := metadBin
	if o.bin != "" {
		bin = o.bin
	}
	var cmd *exec.Cmd
	if o.pid1 {
		requireRoot(t)
		cmd = pid1Command(bin, args...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), o.env...)
	return launch(t, cmd, dir)
}

// launch starts cmd, a metad with JSON logs on stderr, and parses its
// logs as they come. At the end of the test metad gets SIGTERM if it is
// still running, and its log is shown if the test failed.
func launch(t *testing.T, cmd *exec.Cmd, dir string) *instance {
	t.Helper()
	// A pipe of our own rather than StderrPipe: services inherit metad's
	// stderr and may hold it open after metad has gone.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	m := &instance{t: t, cmd: cmd, dir: dir}
	m.cond = sync.NewCond(&m.mu)
	go m.read(r)
	t.Cleanup(func() {
		if !m.exited() {
			cmd.Process.Signal(syscall.SIGTERM)
			m.until(waitLimit, "metad to exit after SIGTERM", func() bool { return m.done })
		}
		if t.Failed() {
			m.mu.Lock()
			t.Logf("metad log:\n%s", strings.Join(m.lines, "\n"))
			m.mu.Unlock()
		}
	})
	return m
}

// pid1Command runs bin as PID 1 of new PID and mount namespaces, with a
// /proc of its own, as `unshare --pid --fork --mount-proc` does; the
// returned command's pid is bin's pid in the parent namespace.
func pid1Command(bin string, args ...string) *exec.Cmd {
	script := `mount --make-rprivate / && mount -t proc proc /proc && exec "$0" "$@"`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, bin}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	return cmd
}

func (m *instance) read(r *os.File) {
	defer r.Close()
	exited := make(chan struct{})
	go func() {
		// Once metad has exited, what it wrote is in the pipe: stop
		// reading soon even if a process it left behind holds the pipe.
		<-exited
		r.SetReadDeadline(time.Now().Add(time.Second))
	}()
	waited := make(chan error, 1)
	go func() {
		err := m.cmd.Wait()
		close(exited)
		waited <- err
	}()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		var ev event
		_ = json.Unmarshal([]byte(line), &ev)
		m.mu.Lock()
		m.lines = append(m.lines, line)
		if ev != nil {
			m.events = append(m.events, ev)
		}
		m.cond.Broadcast()
		m.mu.Unlock()
	}
	err := <-waited
	status := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		status = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			status = 128 + int(ws.Signal())
		}
	}
	m.mu.Lock()
	m.done, m.status = true, status
	m.cond.Broadcast()
	m.mu.Unlock()
}

// until waits until cond holds, with the lock held while it is checked,
// or fails the test after limit.
func (m *instance) until(limit time.Duration, what string, cond func() bool) {
	m.t.Helper()
	if !m.waitCond(limit, cond) {
		m.t.Fatalf("timed out after %v waiting for %s", limit, what)
	}
}

// waitCond waits until cond holds, with the lock held while it is
// checked, or until limit has passed; it reports whether cond held.
func (m *instance) waitCond(limit time.Duration, cond func() bool) bool {
	return condWait(&m.mu, m.cond, limit, cond)
}

// condWait waits on c, whose lock is mu, until cond holds (checked with
// mu held) or limit has passed, and reports whether cond held. Whoever
// changes what cond reads must Broadcast c.
func condWait(mu *sync.Mutex, c *sync.Cond, limit time.Duration, cond func() bool) bool {
	timer := time.AfterFunc(limit, func() {
		mu.Lock()
		c.Broadcast()
		mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(limit)
	mu.Lock()
	defer mu.Unlock()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		c.Wait()
	}
	return true
}

// waitEvent waits for the n-th (from 1) log event that matches and returns it.
func (m *instance) waitEvent(n int, what string, match func(event) bool) event {
	m.t.Helper()
	var found event
	m.until(waitLimit, what, func() bool {
		seen := 0
		for _, ev := range m.events {
			if match(ev) {
				if seen++; seen == n {
					found = ev
					return true
				}
			}
		}
		return false
	})
	return found
}

// count returns how many log events so far match.
func (m *instance) count(match func(event) bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, ev := range m.events {
		if match(ev) {
			n++
		}
	}
	return n
}

// matching returns the log events so far that match.
func (m *instance) matching(match func(event) bool) []event {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []event
	for _, ev := range m.events {
		if match(ev) {
			out = append(out, ev)
		}
	}
	return out
}

func (m *instance) exited() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}

// wait waits for metad to exit and returns its status.
func (m *instance) wait(limit time.Duration) int {
	m.t.Helper()
	m.until(limit, "metad to exit", func() bool { return m.done })
	return m.status
}

func (m *instance) signal(sig syscall.Signal) {
	m.t.Helper()
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.t.Fatalf("cannot signal metad: %v", err)
	}
}

// msg matches events with that message, and optionally that service.
func msg(text string, svc ...string) func(event) bool {
	return func(ev event) bool {
		return ev.str("message") == text && (len(svc) == 0 || ev.str("svc") == svc[0])
	}
}

// runBin runs a binary to completion and returns stdout, stderr, status.
func runBin(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	default:
		t.Fatalf("cannot run %s: %v", bin, err)
		return "", "", -1
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// shq quotes words for a config line or sh -c.
func shq(words ...string) string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}
