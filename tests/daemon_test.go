package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func eventTime(t *testing.T, ev event) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, ev.str("time"))
	if err != nil {
		t.Fatalf("event without a time: %v", ev)
	}
	return ts
}

func TestCrashLoopFollowsBackoff(t *testing.T) {
	// Log times have one-second resolution by default; the gaps are
	// checked from the recorded start times instead.
	starts := filepath.Join(t.TempDir(), "starts")
	script := `date +%s.%N >> ` + starts + `; exit 1`
	conf := "crashy daemon backoff=4s /bin/sh -c " + shq(script) + "\n" +
		"other daemon /bin/sleep 1000\n"
	m := startMetad(t, runOpts{pid1: os.Geteuid() == 0, conf: conf})
	// Starts at 0, 1, 3, 7, 11 s: delays 1, 2, 4, 4 (the ceiling).
	lines := waitFileLines(t, starts, 5)
	var times []float64
	for _, l := range lines {
		f, err := strconv.ParseFloat(l, 64)
		if err != nil {
			t.Fatalf("bad time %q", l)
		}
		times = append(times, f)
	}
	want := []float64{1, 2, 4, 4}
	for i, w := range want {
		gap := times[i+1] - times[i]
		// A gap can only be longer than the delay (start-up work), never
		// shorter; a bound above keeps a fixed or missing delay from passing.
		if gap < w-0.05 || gap > w+1.5 {
			t.Errorf("gap %d: got %.3fs, want %.0fs", i+1, gap, w)
		}
	}
	delays := m.matching(msg("backoff", "crashy"))
	var got []string
	for _, ev := range delays[:4] {
		got = append(got, fmt.Sprint(ev["delay"]))
	}
	if strings.Join(got, " ") != "1s 2s 4s 4s" {
		t.Errorf("got backoff delays %v, want 1s 2s 4s 4s", got)
	}
	if n := m.count(msg("started", "other")); n != 1 {
		t.Errorf("the healthy service started %d times, want 1", n)
	}
}

func TestMinMaxKeepsThree(t *testing.T) {
	conf := "three daemon min=3 max=3 /bin/sleep 1000\n"
	m := startMetad(t, runOpts{conf: conf})
	var pids []int
	for i := 1; i <= 3; i++ {
		pids = append(pids, m.waitEvent(i, "three starts", msg("started", "three")).int("pid"))
	}
	if err := syscall.Kill(pids[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	m.waitEvent(1, "the killed instance to be reaped", func(ev event) bool {
		return ev.str("message") == "exited" && ev.int("pid") == pids[1]
	})
	repl := m.waitEvent(4, "a replacement", msg("started", "three")).int("pid")
	for _, pid := range []int{pids[0], pids[2], repl} {
		if !alive(pid) {
			t.Errorf("instance %d is not alive", pid)
		}
	}
	if alive(pids[1]) {
		t.Errorf("killed instance %d is still there (not reaped?)", pids[1])
	}
	m.signal(syscall.SIGTERM)
	m.wait(waitLimit)
	if n := m.count(msg("started", "three")); n != 4 {
		t.Errorf("got %d starts, want 4", n)
	}
}

func TestPeriodUpToMax(t *testing.T) {
	conf := "grow daemon min=0 max=2 period=1s /bin/sleep 1000\n" +
		"tick daemon min=0 max=1 period=1s /bin/true\n"
	m := startMetad(t, runOpts{conf: conf})
	m.waitEvent(2, "two periodic starts", msg("started", "grow"))
	// Barrier: three more periods pass, seen by the other periodic service.
	n := m.count(msg("started", "tick"))
	m.waitEvent(n+3, "three more periods", msg("started", "tick"))
	if got := m.count(msg("started", "grow")); got != 2 {
		t.Errorf("got %d starts, want 2 (max=2)", got)
	}
	starts := m.matching(msg("started", "grow"))
	if gap := eventTime(t, starts[1]).Sub(eventTime(t, starts[0])); gap < 500*time.Millisecond {
		t.Errorf("two periodic starts %v apart, want about a period", gap)
	}
}

func TestPidfileDaemonIsFollowed(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "daemon.pid")
	// The program forks the real daemon, writes its pid and exits 0.
	script := `sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > ` + pidfile + `; exit 0`
	conf := "forky daemon pidfile=" + pidfile + " /bin/sh -c " + shq(script) + "\n"
	m := startMetad(t, runOpts{conf: conf})
	first := m.waitEvent(1, "the daemon to be followed", msg("following daemon", "forky")).int("pid")
	if !alive(first) {
		t.Fatalf("followed pid %d is not alive", first)
	}
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	second := m.waitEvent(2, "a new daemon to be followed", msg("following daemon", "forky")).int("pid")
	if second == first || !alive(second) {
		t.Errorf("got followed pid %d after killing %d, want a new live one", second, first)
	}
	if n := m.count(msg("started", "forky")); n != 2 {
		t.Errorf("got %d starts, want 2", n)
	}
}

func TestSubreaperAdoptsOrphans(t *testing.T) {
	orphan := filepath.Join(t.TempDir(), "orphan")
	// The subshell starts the orphan and exits; the service lives on.
	script := `(sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > ` + orphan + `); exec sleep 1000`
	conf := "parent daemon /bin/sh -c " + shq(script) + "\n"
	m := startMetad(t, runOpts{conf: conf})
	lines := waitFileLines(t, orphan, 1)
	pid, _ := strconv.Atoi(lines[0])
	metad := m.cmd.Process.Pid
	deadline := time.Now().Add(waitLimit)
	for ppid(pid) != metad {
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d has parent %d, want metad %d", pid, ppid(pid), metad)
		}
		time.Sleep(5 * time.Millisecond) // re-parenting has no event to wait on
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	m.waitEvent(1, "the orphan to be reaped", func(ev event) bool {
		return ev.str("message") == "reaped orphan" && ev.int("pid") == pid
	})
	if alive(pid) || ppid(pid) == metad {
		t.Errorf("orphan %d is still there", pid)
	}
}

// ppid returns the parent of pid, or 0 when pid is gone.
func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

func TestChildSeesOnlyStdio(t *testing.T) {
	out := filepath.Join(t.TempDir(), "fds")
	conf := "fds daemon " + strings.Join(helper("list-fds", out), " ") + "\n"
	for _, pid1 := range []bool{false, os.Geteuid() == 0} {
		m := startMetad(t, runOpts{pid1: pid1, conf: conf, args: []string{"-k", "/nonexistent"}})
		m.waitEvent(1, "the service to exit", msg("exited", "fds"))
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.TrimSpace(string(b)), "fds=0,1,2 blocked=0000000000000000 ignored=0000000000000000"; got != want {
			t.Errorf("pid1=%v: got %q, want %q", pid1, got, want)
		}
		os.Remove(out)
	}
}
