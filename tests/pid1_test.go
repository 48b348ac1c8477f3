package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// orphanScript makes n orphans: each subshell starts a background process
// and exits at once, so the process is re-parented to the nearest reaper.
func orphanScript(n int) string {
	return fmt.Sprintf(`i=0; while [ $i -lt %d ]; do (true &); i=$((i+1)); done`, n)
}

func TestPID1ReapsOrphans(t *testing.T) {
	script := orphanScript(1000) + "; exec " + strings.Join(helper("no-zombies"), " ")
	m := startMetad(t, runOpts{pid1: true, cmd: []string{"/bin/sh", "-c", script}})
	if got := m.wait(60 * time.Second); got != 0 {
		t.Errorf("got exit status %d, want 0 (no zombie left after 1000 orphans)", got)
	}
}

// TestPID1ReapsOrphanFromOutside has metad, as PID 1 with nothing to run,
// adopt an orphan that entered its PID namespace with setns(2), as `docker
// exec` does: the shell nsenter starts there puts sleep in the background
// and exits, so the kernel re-parents sleep to metad. metad has had no
// child to wait for, yet must reap sleep when it ends.
func TestPID1ReapsOrphanFromOutside(t *testing.T) {
	m := startMetad(t, runOpts{pid1: true, conf: "# no services\n"})
	m.waitEvent(1, "metad to start", msg("metad started"))
	out, err := exec.Command("nsenter", "--target", strconv.Itoa(m.cmd.Process.Pid), "--pid", "--",
		"/bin/sh", "-c", "sleep 0.2 & echo $!").Output()
	if err != nil {
		t.Fatalf("nsenter: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("got %q from the shell, want a pid", out)
	}
	m.waitEvent(1, fmt.Sprintf("metad to reap orphan %d", pid), func(ev event) bool {
		return ev.str("message") == "reaped orphan" && ev.int("pid") == pid
	})
}

// TestLazyInitLeavesZombies shows that the zombie check above can fail: a
// PID 1 that does not reap leaves the orphans as zombies.
func TestLazyInitLeavesZombies(t *testing.T) {
	requireRoot(t)
	script := orphanScript(50) + "; exec " + strings.Join(helper("no-zombies"), " ")
	args := append(helper("lazy-init"), "/bin/sh", "-c", script)
	cmd := pid1Command(args[0], args[1:]...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "zombies left") {
		t.Errorf("got err %v, output %q; want the check to fail with zombies left", err, out)
	}
}

func TestCommandExitStatus(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cmd  []string
		want int
	}{
		{"exit 0", []string{"/bin/true"}, 0},
		{"exit 3", []string{"/bin/sh", "-c", "exit 3"}, 3},
		{"killed by SIGUSR1", []string{"/bin/sh", "-c", "kill -USR1 $$"}, 128 + int(syscall.SIGUSR1)},
		{"killed by SIGKILL", []string{"/bin/sh", "-c", "kill -KILL $$"}, 128 + int(syscall.SIGKILL)},
		{"not found", []string{"/nonexistent/command"}, 127},
		{"not found in PATH", []string{"no-such-command-anywhere"}, 127},
		{"not executable", []string{notExec}, 126},
	}
	for _, pid1 := range []bool{true, false} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/pid1=%v", tt.name, pid1), func(t *testing.T) {
				m := startMetad(t, runOpts{pid1: pid1, cmd: tt.cmd})
				if got := m.wait(waitLimit); got != tt.want {
					t.Errorf("got exit status %d, want %d", got, tt.want)
				}
			})
		}
	}
}

// forwarded are the signals a container runtime or a user sends that must
// reach the command. SIGPIPE is not among them: metad cannot tell one sent
// to it from one its own write to a closed socket raised.
var forwarded = []syscall.Signal{
	syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2,
	syscall.SIGALRM, syscall.SIGTERM, syscall.SIGCONT, syscall.SIGWINCH,
	syscall.SIGTSTP, syscall.SIGPWR, syscall.SIGXCPU, syscall.SIGVTALRM,
	syscall.Signal(35), syscall.Signal(50),
}

func TestPID1ForwardsSignals(t *testing.T) {
	file := filepath.Join(t.TempDir(), "signals")
	args := []string{file}
	for _, s := range forwarded {
		args = append(args, strconv.Itoa(int(s)))
	}
	m := startMetad(t, runOpts{pid1: true, cmd: helper("signals", args...)})
	for i, s := range forwarded {
		waitFileLines(t, file, i+1)
		m.signal(s)
	}
	if got := m.wait(waitLimit); got != 0 {
		t.Fatalf("got exit status %d, want 0 (the command saw every signal)", got)
	}
	lines := readLines(t, file)
	got := lines[1:]
	var want []string
	for _, s := range forwarded {
		want = append(want, strconv.Itoa(int(s)))
	}
	if !slices.Equal(got, want) {
		t.Errorf("got signals %v, want %v", got, want)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// waitFileLines waits until path has at least n lines, woken by inotify
// on path's directory (the file may not exist yet), bounded by waitLimit.
func waitFileLines(t *testing.T, path string, n int) []string {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_CREATE|unix.IN_MODIFY|unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLimit)
	events := make([]byte, 4096)
	for {
		b, _ := os.ReadFile(path)
		if lines := strings.Count(string(b), "\n"); lines >= n {
			return readLines(t, path)
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("timed out waiting for %d lines in %s; got %q", n, path, b)
		}
		unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds())+1)
		for { // drain: the file is read again whatever changed
			if _, err := unix.Read(fd, events); err != nil {
				break
			}
		}
	}
}

// TestShutdownKillsStubbornService checks that SIGTERM ends metad within
// the stop timeout plus the bound even when a service ignores SIGTERM, and
// that nothing of the service survives.
func TestShutdownKillsStubbornService(t *testing.T) {
	for _, pid1 := range []bool{true, false} {
		t.Run(fmt.Sprintf("pid1=%v", pid1), func(t *testing.T) {
			pids := filepath.Join(t.TempDir(), "pids")
			script := `trap "" TERM; sleep 1000 & echo $$ $! > ` + pids + `; wait`
			conf := "stubborn daemon /bin/sh -c " + shq(script) + "\n"
			m := startMetad(t, runOpts{pid1: pid1, conf: conf, args: []string{"--stop-timeout", "1s"}})
			m.waitEvent(1, "the service to start", msg("started", "stubborn"))
			lines := waitFileLines(t, pids, 1)
			start := time.Now()
			m.signal(syscall.SIGTERM)
			if got := m.wait(1*time.Second + 2*time.Second); got != 0 {
				t.Errorf("got exit status %d, want 0", got)
			}
			t.Logf("shutdown took %v", time.Since(start))
			if m.count(msg("killed", "stubborn")) != 1 {
				t.Errorf("got no \"killed\" event, want one")
			}
			if !pid1 {
				for _, f := range strings.Fields(lines[0]) {
					pid, _ := strconv.Atoi(f)
					if alive(pid) {
						t.Errorf("process %d of the service is still alive", pid)
					}
				}
			}
		})
	}
}
