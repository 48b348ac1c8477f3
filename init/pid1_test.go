package initsys

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestSetSubreaper(t *testing.T) {
	// TestMain called SetSubreaper.
	var on int32
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&on)), 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if on != 1 {
		t.Errorf("got %d, want 1", on)
	}
}

func TestNotPID1(t *testing.T) {
	if MachineInit() {
		t.Error("MachineInit: got true in a test, want false")
	}
	if err := KillAll(0); err == nil {
		t.Error("KillAll: got no error outside PID 1")
	}
	if err := reaper.Drain(ctxFor(t), time.Second); err == nil {
		t.Error("Drain: got no error outside PID 1")
	}
}

func TestIsMountPoint(t *testing.T) {
	tests := map[string]bool{"/": true, t.TempDir(): false}
	for dir, want := range tests {
		if got, err := isMountPoint(dir); got != want || err != nil {
			t.Errorf("isMountPoint(%s): got %v, %v, want %v", dir, got, err, want)
		}
	}
	if _, err := isMountPoint("/nonexistent"); err == nil {
		t.Error("isMountPoint(/nonexistent): got no error")
	}
}

// inNamespaces runs the helper child name in new namespaces (flags) and
// returns its exit and its output. It skips the test where the namespaces
// cannot be made.
func inNamespaces(t *testing.T, flags uintptr, name string, args ...string) (Exit, string) {
	t.Helper()
	p := helper(name, args...)
	attr, err := p.attr()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	attr.Files[1] = w.Fd()
	attr.Sys.Cloneflags = flags
	exits := make(chan Exit, 1)
	_, err = reaper.start(p.Path, p.Argv, attr, func(e Exit) { exits <- e })
	w.Close()
	if err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("cannot make namespaces without root: %v", err)
		}
		t.Fatalf("cannot make namespaces as root: %v", err)
	}
	r.SetReadDeadline(time.Now().Add(patience))
	out, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && out != "" {
		t.Fatalf("cannot read from %s: %v", name, err)
	}
	return await(t, exits), strings.TrimSuffix(out, "\n")
}

// TestDrain runs Drain as PID 1 of a new PID namespace: a child that dies
// of SIGTERM does, a child that ignores it gets SIGKILL after the grace,
// and nothing is left.
func TestDrain(t *testing.T) {
	e, out := inNamespaces(t, syscall.CLONE_NEWPID, "pid1-drain")
	want := "machine=false drain=<nil> running=0 sleep=signal 15 (terminated) ignore=signal 9 (killed)"
	if e.Code() != 0 || out != want {
		t.Errorf("got %v: %q, want exit status 0: %q", e, out, want)
	}
}

// TestFinish calls Finish as PID 1 of a new PID namespace, where reboot(2)
// ends the namespace and reports its PID 1 dead of SIGHUP or SIGINT.
func TestFinish(t *testing.T) {
	for f, want := range map[Final]syscall.Signal{Reboot: syscall.SIGHUP, Poweroff: syscall.SIGINT, Halt: syscall.SIGINT} {
		e, out := inNamespaces(t, syscall.CLONE_NEWPID, "pid1-finish", strconv.Itoa(int(f)))
		if sig, _ := e.Signaled(); sig != want {
			t.Errorf("%v: got %v %q, want signal %d", f, e, out, want)
		}
	}
	if err := Finish(Final(9)); err == nil {
		t.Error("Finish(9): got no error")
	}
}

// TestMountEssentials mounts the essentials under a tmpfs in a new mount
// namespace, twice: the second time mounts nothing.
func TestMountEssentials(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	e, out := inNamespaces(t, syscall.CLONE_NEWNS, "mounts", t.TempDir())
	if e.Code() != 0 || out != "ok" {
		t.Errorf("got %v: %s, want exit status 0: ok", e, out)
	}
}
