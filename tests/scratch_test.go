package tests

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// dockerPath is the PATH a container runtime gives a FROM scratch image.
const dockerPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// scratchRoot makes what a FROM scratch image of metad holds: /metad,
// /metac -> metad and conf as /etc/metad.conf (none if ""). No shell, no
// libc, no /etc/passwd or /etc/services, no /dev, /proc or /run. The test
// binary is added as /helper, for the helper programs (helpers_test.go),
// which it runs when METAD_TEST_HELPER names one: the tests set that
// variable in metad's environment, which its children inherit.
func scratchRoot(t *testing.T, conf string) string {
	t.Helper()
	requireRoot(t)
	if static, err := isStatic(selfBin); err != nil || !static {
		t.Skipf("the test binary is not static (%v): run the tests with CGO_ENABLED=0, as make integration does", err)
	}
	root := t.TempDir()
	copyFile(t, metadBin, filepath.Join(root, "metad"))
	copyFile(t, selfBin, filepath.Join(root, "helper"))
	if err := os.Symlink("metad", filepath.Join(root, "metac")); err != nil {
		t.Fatal(err)
	}
	if conf != "" {
		if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "etc", "metad.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// scratchCommand runs /metad of root with args as PID 1 of new PID, mount
// and UTS namespaces, chrooted into root: what a container runtime does
// with an image whose ENTRYPOINT is ["/metad"]. env is added to a
// runtime's environment.
func scratchCommand(root string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("/metad", append([]string{"--log-format", "json", "--log-level", "debug"}, args...)...)
	cmd.Dir = "/"
	cmd.Env = append([]string{dockerPath, "HOSTNAME=scratch"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
	}
	return cmd
}

// TestScratchCommandExitStatus: in command mode metad exits with its
// command's status, as a shell reports it, in an image with nothing else.
func TestScratchCommandExitStatus(t *testing.T) {
	root := scratchRoot(t, "")
	tests := []struct {
		name string
		cmd  []string
		want int
	}{
		{"exit 0", []string{"/metad", "-V"}, 0},
		{"exit 2", []string{"/metac"}, 2}, // no command: a usage error
		{"not found", []string{"/bin/sh"}, 127},
		{"not found in PATH", []string{"sh"}, 127},
		{"not executable", []string{"/"}, 126},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := launch(t, scratchCommand(root, nil, append([]string{"--"}, tt.cmd...)...), root)
			if got := m.wait(waitLimit); got != tt.want {
				t.Errorf("got exit status %d, want %d", got, tt.want)
			}
		})
	}
}

// TestScratchCommandSignals: signals reach the command, and a command
// killed by a signal makes metad exit 128+N.
func TestScratchCommandSignals(t *testing.T) {
	root := scratchRoot(t, "")
	// The helper records SIGUSR1 and SIGUSR2 in /signals; SIGTERM kills it.
	usr1, usr2 := strconv.Itoa(int(syscall.SIGUSR1)), strconv.Itoa(int(syscall.SIGUSR2))
	cmd := scratchCommand(root, []string{"METAD_TEST_HELPER=signals"}, "--", "/helper", "/signals", usr1, usr2)
	m := launch(t, cmd, root)
	file := filepath.Join(root, "signals")
	waitFileLines(t, file, 1)
	m.signal(syscall.SIGUSR1)
	if got := waitFileLines(t, file, 2); got[1] != usr1 {
		t.Errorf("got signal %s, want %s", got[1], usr1)
	}
	m.signal(syscall.SIGTERM)
	if got, want := m.wait(waitLimit), 128+int(syscall.SIGTERM); got != want {
		t.Errorf("got exit status %d, want %d", got, want)
	}
}

// TestScratchCommandCtlList: in command mode with a config, the command
// can be metad's own control client, which reaches metad through the
// default socket.
func TestScratchCommandCtlList(t *testing.T) {
	root := scratchRoot(t, "worker daemon env=METAD_TEST_HELPER=signals /helper /worker 10\n")
	cmd := scratchCommand(root, nil, "--", "/metac", "--json", "list")
	var out bytes.Buffer
	cmd.Stdout = &out
	m := launch(t, cmd, root)
	status := m.wait(waitLimit)
	got := out.Bytes()
	if status != 0 {
		t.Fatalf("got exit status %d, stdout %q; want 0", status, got)
	}
	var h ctlHost
	if err := json.Unmarshal(got, &h); err != nil || !h.OK || len(h.Services) != 1 || h.Services[0].Name != "worker" {
		t.Errorf("got %q (%v), want an ok answer listing worker", got, err)
	}
}

// TestScratchConfigMode: metad in config mode in an empty image runs its
// services, answers metad ctl list run inside the container (as a
// liveness probe does), reaps orphans that come to it, and exits 0 on
// SIGTERM.
func TestScratchConfigMode(t *testing.T) {
	// nest is a metad of its own in command mode: killing it leaves its
	// command, the helper, to the PID 1 metad.
	// It reads an empty config: with /etc/metad.conf it would nest again.
	conf := "nest daemon env=METAD_TEST_HELPER=signals /metad -f /etc/empty.conf -s /nest.sock -- /helper /orphan 10\n"
	root := scratchRoot(t, conf)
	if err := os.WriteFile(filepath.Join(root, "etc", "empty.conf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m := launch(t, scratchCommand(root, nil), root)
	m.waitEvent(1, "nest to start", msg("started", "nest"))
	waitFileLines(t, filepath.Join(root, "orphan"), 1)

	// metad ctl list, run in the container's namespaces and root.
	probe := exec.Command("nsenter", "-t", strconv.Itoa(m.cmd.Process.Pid), "-p", "-m", "-u", "-r", "-w", "/metad", "ctl", "list")
	out, err := probe.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nest") {
		t.Errorf("metad ctl list in the container: got %v, output %q; want the nest service listed", err, out)
	}

	// Kill nest's metad: its helper becomes an orphan of PID 1.
	procs := namespaceProcs(t, m.cmd.Process.Pid)
	inner, helper := procs["/metad"], procs["/helper"]
	if inner == 0 || helper == 0 {
		t.Fatalf("got processes %v, want /metad and /helper in the container", procs)
	}
	syscall.Kill(inner, syscall.SIGKILL)
	m.waitEvent(1, "nest's metad to die", msg("exited", "nest"))
	orphan := nsPID(t, helper)
	syscall.Kill(helper, syscall.SIGTERM)
	m.waitEvent(1, "the orphan to be reaped", func(ev event) bool {
		return ev.str("message") == "reaped orphan" && ev.int("pid") == orphan
	})

	m.signal(syscall.SIGTERM)
	if got := m.wait(waitLimit); got != 0 {
		t.Errorf("got exit status %d, want 0", got)
	}
	if ev := m.matching(msg("shutting down")); len(ev) != 1 || ev[0].str("signal") != "terminated" {
		t.Errorf("got %v, want one \"shutting down\" on SIGTERM", ev)
	}
}

// namespaceProcs returns the processes in the PID namespace of pid but
// pid itself, by argv[0], with their pids in this namespace.
func namespaceProcs(t *testing.T, pid int) map[string]int {
	t.Helper()
	ns, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir("/proc")
	procs := map[string]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		if l, _ := os.Readlink("/proc/" + e.Name() + "/ns/pid"); l != ns {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		argv0, _, _ := strings.Cut(string(cmdline), "\x00")
		procs[argv0] = p
	}
	return procs
}

// nsPID returns the pid in its own PID namespace of the process pid of
// this namespace.
func nsPID(t *testing.T, pid int) int {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	t.Fatalf("no NSpid in the status of process %d", pid)
	return 0
}
