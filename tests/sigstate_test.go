package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// launchWithSignals is a Python launcher that sets tini's signal
// configuration test's dispositions (TTOU, SEGV and INT ignored; TTIN,
// ILL and TERM blocked; Python's own SIGPIPE and SIGXFSZ back to the
// default), writes its resulting SigBlk and SigIgn to argv[1], and
// executes argv[2:].
const launchWithSignals = `
import os, signal, sys
for s in (signal.SIGPIPE, signal.SIGXFSZ):
    signal.signal(s, signal.SIG_DFL)
for s in (signal.SIGTTOU, signal.SIGSEGV, signal.SIGINT):
    signal.signal(s, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTTIN, signal.SIGILL, signal.SIGTERM])
with open(sys.argv[1], "w") as f:
    for line in open("/proc/self/status"):
        if line.startswith(("SigBlk:", "SigIgn:")):
            f.write(line)
os.execv(sys.argv[2], sys.argv[2:])
`

// sigLines returns the SigBlk and SigIgn lines of a /proc/PID/status text.
func sigLines(text string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "SigBlk:") || strings.HasPrefix(line, "SigIgn:") {
			out = append(out, strings.Join(strings.Fields(line), " "))
		}
	}
	return strings.Join(out, "; ")
}

// TestCommandSignalStateTransparent: in command mode the command gets the
// signal dispositions and mask metad was started with (SPEC §9), while a
// service of the same metad gets none of them.
func TestCommandSignalStateTransparent(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed (apt-get install python3)")
	}
	dir := t.TempDir()
	launcher := filepath.Join(dir, "launch.py")
	if err := os.WriteFile(launcher, []byte(launchWithSignals), 0o644); err != nil {
		t.Fatal(err)
	}
	// The command is cat, which changes nothing of its signal state (a
	// shell might: dash empties the mask around the children it waits
	// for): it prints its own status, then waits for the service's
	// report by reading a FIFO that the service writes to.
	svcOut := filepath.Join(dir, "service")
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := writeConf(t, "svc daemon sh -c 'cat /proc/self/status > "+svcOut+".new && mv "+svcOut+".new "+svcOut+"; echo >> "+fifo+"; exec sleep 600'\n")
	launched := filepath.Join(dir, "launched")
	cmd := exec.Command(python, launcher, launched, metadBin, "-f", conf, "-s", filepath.Join(dir, "sock"),
		"-k", "/nonexistent", "--log-format", "json", "--", "/bin/cat", "/proc/self/status", fifo)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("metad: %v\n%s", err, stderr.String())
	}
	want, err := os.ReadFile(launched)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sigLines(string(out)), sigLines(string(want)); got != want || got == "" {
		t.Errorf("command: got %q, want %q (what metad was started with)", got, want)
	}
	svc, err := os.ReadFile(svcOut)
	if err != nil {
		t.Fatalf("the service did not report: %v\n%s", err, stderr.String())
	}
	if got, want := sigLines(string(svc)), "SigBlk: 0000000000000000; SigIgn: 0000000000000000"; got != want {
		t.Errorf("service: got %q, want %q", got, want)
	}
}
