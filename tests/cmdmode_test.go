package tests

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// startWithSignals starts metad with args through python3, which execs it
// with SIGHUP and SIGINT ignored and SIGUSR2 blocked, as nohup, a shell's
// background job or a parent's mask leave a program.
func startWithSignals(t *testing.T, dir string, args ...string) *instance {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("needs python3 to start metad with signals ignored and blocked")
	}
	// Python ignores SIGPIPE and SIGXFSZ for itself: back to the defaults
	// before it execs metad.
	wrapper := `import os, signal, sys
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
state = {}
for line in open("/proc/self/status"):
    k, _, v = line.partition(":")
    state[k] = v.strip()
with open(sys.argv[1], "w") as f:
    f.write("blocked=%s ignored=%s\n" % (state["SigBlk"], state["SigIgn"]))
os.execv(sys.argv[2], sys.argv[2:])
`
	base := []string{python, "-c", wrapper, filepath.Join(dir, "launched"), metadBin, "--log-format", "json", "--log-level", "debug", "-s", filepath.Join(dir, "metad.sock")}
	cmd := exec.Command(base[0], append(base[1:], args...)...)
	cmd.Dir = dir
	return launch(t, cmd, dir)
}

// signalState returns the "blocked=… ignored=…" part of what list-fds
// wrote to file.
func signalState(t *testing.T, file string) string {
	t.Helper()
	_, state, _ := strings.Cut(waitFileLines(t, file, 1)[0], " ")
	return state
}

// TestIssue12CommandModeIsTransparent is SPEC §9's last rule, from issue
// 12 (defect 7: tests that failed under nohup): metad started with
// SIGHUP and SIGINT ignored and SIGUSR2 blocked gives its command that
// same signal state, as tini does, and its services the defaults. (The
// programs that report it are not run through /bin/sh: dash clears the
// signal mask when it starts.)
func TestIssue12CommandModeIsTransparent(t *testing.T) {
	dir := t.TempDir()
	cmdOut, svcOut := filepath.Join(dir, "command"), filepath.Join(dir, "service")

	launchDir := t.TempDir()
	m := startWithSignals(t, launchDir, append([]string{"--"}, helper("list-fds", cmdOut)...)...)
	if got := m.wait(waitLimit); got != 0 {
		t.Errorf("command mode: got exit status %d, want 0", got)
	}
	// What metad was started with: the wrapper's settings on top of what
	// the test itself inherited (a runner may ignore more signals).
	want := strings.TrimSpace(waitFileLines(t, filepath.Join(launchDir, "launched"), 1)[0])
	var blocked, ignored uint64
	if _, err := fmt.Sscanf(want, "blocked=%x ignored=%x", &blocked, &ignored); err != nil || blocked&0x800 == 0 || ignored&0x3 != 0x3 {
		t.Fatalf("the wrapper started metad with %q, want USR2 blocked and HUP, INT ignored", want)
	}
	if got := signalState(t, cmdOut); got != want {
		t.Errorf("command: got %q, want %q (metad's own start state)", got, want)
	}

	conf := writeConf(t, "fds daemon min=0 "+strings.Join(helper("list-fds", svcOut), " ")+"\n")
	m = startWithSignals(t, t.TempDir(), "-f", conf)
	m.waitEvent(1, "the control socket", msg("control socket listening"))
	ctlOf(m).must("start", "fds")
	if got, want := signalState(t, svcOut), "blocked=0000000000000000 ignored=0000000000000000"; got != want {
		t.Errorf("service: got %q, want %q (the defaults)", got, want)
	}
}
