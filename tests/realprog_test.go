package tests

// Helpers for the tests that run real programs under metad (nginx, git
// daemon, sh with leftovers) and look at the processes themselves in
// /proc rather than at what metad says of them.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is what /proc says of one live (not zombie) process.
type proc struct {
	pid, ppid, pgrp, sid int
	argv                 []string
}

// readProc reads /proc/PID; ok is false when pid is gone or a zombie.
func readProc(pid int) (p proc, ok bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return p, false
	}
	f := strings.Fields(s[i+1:]) // state ppid pgrp session ...
	if len(f) < 4 || f[0] == "Z" || f[0] == "X" {
		return p, false
	}
	p.pid = pid
	p.ppid, _ = strconv.Atoi(f[1])
	p.pgrp, _ = strconv.Atoi(f[2])
	p.sid, _ = strconv.Atoi(f[3])
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	p.argv = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	return p, true
}

// procsWhere lists the live processes that match.
func procsWhere(match func(proc) bool) []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok && match(p) {
			out = append(out, p)
		}
	}
	return out
}

// pidsOf returns the pids of ps.
func pidsOf(ps []proc) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = p.pid
	}
	return out
}

// marker returns a number no other test or process uses, to be given
// as the argument of a sleep (`sleep 4711042` sleeps for weeks) so that
// the processes of one test can be found by their command line.
func marker() string {
	return strconv.Itoa(3_000_000 + rand.IntN(6_000_000))
}

// sleeping matches the processes running `sleep ARG`.
func sleeping(arg string) func(proc) bool {
	return func(p proc) bool {
		return len(p.argv) == 2 && filepath.Base(p.argv[0]) == "sleep" && p.argv[1] == arg
	}
}

// killLeftovers kills, at the end of the test, every process that still
// matches: what a metad under test failed to stop must not outlive the
// test. Register it before starting metad, so that it runs after metad
// has been told to exit.
func killLeftovers(t *testing.T, match func(proc) bool) {
	t.Cleanup(func() {
		for _, p := range procsWhere(match) {
			syscall.Kill(p.pid, syscall.SIGKILL)
		}
	})
}

// procPoll is how often a wait on /proc looks again. The end of a process
// that is not our child has no event we can wait on for processes that
// may not exist yet; the waits are bounded by their deadline.
const procPoll = 10 * time.Millisecond

// pollUntil polls cond until it holds or limit has passed, and reports
// whether it held.
func pollUntil(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(procPoll)
	}
}

// waitNone waits until no live process matches, for at most limit, and
// returns those still there at the deadline.
func waitNone(limit time.Duration, match func(proc) bool) []proc {
	var left []proc
	pollUntil(limit, func() bool {
		left = procsWhere(match)
		return len(left) == 0
	})
	return left
}

// describe prints processes for a failure message.
func describe(ps []proc) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%d (ppid %d pgrp %d sid %d) %q", p.pid, p.ppid, p.pgrp, p.sid, strings.Join(p.argv, " ")))
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// waitExitOr waits until metad has exited or limit has passed, without
// failing the test; it reports whether metad exited and its status.
func (m *instance) waitExitOr(limit time.Duration) (exited bool, status int) {
	exited = m.waitCond(limit, func() bool { return m.done })
	m.mu.Lock()
	defer m.mu.Unlock()
	return exited, m.status
}

// waitSince waits, for at most limit, for an event that matches among
// those from index from on, without failing the test; it reports whether
// there was one.
func (m *instance) waitSince(from int, limit time.Duration, match func(event) bool) bool {
	timer := time.AfterFunc(limit, func() {
		m.mu.Lock()
		m.cond.Broadcast()
		m.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(limit)
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		if from < len(m.events) && slices.ContainsFunc(m.events[from:], match) {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		m.cond.Wait()
	}
}

// listServices runs metac --json list and returns each service as the
// JSON object metac printed, so that fields added later can be read too.
func (c ctl) listServices(names ...string) []map[string]any {
	c.t.Helper()
	out, errOut, status := c.run(append([]string{"--json", "list"}, names...)...)
	var h struct {
		OK       bool             `json:"ok"`
		Services []map[string]any `json:"services"`
	}
	line, _, _ := strings.Cut(out, "\n")
	if err := json.Unmarshal([]byte(line), &h); err != nil || status != 0 || !h.OK {
		c.t.Fatalf("metac --json list: got status %d, stdout %q, stderr %q, %v; want 0 and one ok host", status, out, errOut, err)
	}
	return h.Services
}

// serviceNames returns the "name" of each service.
func serviceNames(svcs []map[string]any) []string {
	var out []string
	for _, s := range svcs {
		n, _ := s["name"].(string)
		out = append(out, n)
	}
	return out
}

// mentionsNumber reports whether n appears as a number anywhere in v, a
// decoded JSON value, outside of the "instances" arrays.
func mentionsNumber(v any, n int) bool {
	switch v := v.(type) {
	case float64:
		return int(v) == n
	case []any:
		return slices.ContainsFunc(v, func(e any) bool { return mentionsNumber(e, n) })
	case map[string]any:
		for k, e := range v {
			if k != "instances" && mentionsNumber(e, n) {
				return true
			}
		}
	}
	return false
}

// inCustody reports whether metad lists pid for service name anywhere but
// among its instances: in metac --json list or, where there is one, in
// metac --json status.
func (c ctl) inCustody(name string, pid int) bool {
	c.t.Helper()
	for _, s := range c.listServices(name) {
		if mentionsNumber(s, pid) {
			return true
		}
	}
	out, _, status := c.run("--json", "status", name)
	if status != 0 {
		return false
	}
	var v any
	line, _, _ := strings.Cut(out, "\n")
	return json.Unmarshal([]byte(line), &v) == nil && mentionsNumber(v, pid)
}

// dialFrom connects from source address src (any of 127/8 works on the
// loopback without setup) to addr.
func dialFrom(src, addr string, timeout time.Duration) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: timeout}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// gitRepo makes DIR/repo.git, a bare repository with one commit, and
// returns DIR and the commit's id.
func gitRepo(t *testing.T) (base, commit string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git (installed by .ci/run)")
	}
	base = t.TempDir()
	src := filepath.Join(base, "src")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=metad", "-c", "user.email=metad@example.org", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+base)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("init", "-q", src)
	run("-C", src, "commit", "-q", "--allow-empty", "-m", "the one commit")
	commit = run("-C", src, "rev-parse", "HEAD")
	run("clone", "-q", "--bare", src, filepath.Join(base, "repo.git"))
	return base, commit
}

// gitLsRemote asks a git daemon for the refs of repo.git and returns
// what it said.
func gitLsRemote(port int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "ls-remote", fmt.Sprintf("git://127.0.0.1:%d/repo.git", port))
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME=/nonexistent")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
