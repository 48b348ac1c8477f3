package tests

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestIssue12CommandModeIsTransparent is SPEC §9's last rule, from issue
// 12 (defect 7: tests that failed under nohup): metad started with
// SIGHUP and SIGINT ignored and SIGUSR2 blocked, as nohup, a shell's
// background job or a parent's mask leave it, gives its command that same
// signal state, as tini does, and its services the defaults.
func TestIssue12CommandModeIsTransparent(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("needs python3 to start metad with signals ignored and blocked")
	}
	dir := t.TempDir()
	cmdOut, svcOut := filepath.Join(dir, "command"), filepath.Join(dir, "service")
	arg := marker()
	killLeftovers(t, sleeping(arg))
	conf := writeConf(t, "fds daemon min=0 "+strings.Join(helper("list-fds", svcOut), " ")+"\n")
	// Python ignores SIGPIPE and SIGXFSZ for itself: back to the defaults
	// before it execs metad.
	wrapper := `import os, signal, sys
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
os.execv(sys.argv[1], sys.argv[1:])
`
	command := strings.Join(helper("list-fds", cmdOut), " ") + "; exec sleep " + arg
	args := []string{python, "-c", wrapper, metadBin, "--log-format", "json", "--log-level", "debug",
		"-s", filepath.Join(dir, "metad.sock"), "-f", conf, "--", "/bin/sh", "-c", command}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	m := launch(t, cmd, dir)
	m.waitEvent(1, "the control socket", msg("control socket listening"))
	ctlOf(m).must("start", "fds")
	got := map[string]string{}
	for name, file := range map[string]string{"command": cmdOut, "service": svcOut} {
		got[name] = waitFileLines(t, file, 1)[0]
	}
	for name, want := range map[string]string{
		"command": "blocked=0000000000000800 ignored=0000000000000003",
		"service": "blocked=0000000000000000 ignored=0000000000000000",
	} {
		if _, state, _ := strings.Cut(got[name], " "); state != want {
			t.Errorf("%s: got %q, want %q", name, state, want)
		}
	}
}
