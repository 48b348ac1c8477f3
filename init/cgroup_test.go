package initsys

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// testCgroups returns a cgroup subtree for the test, removed at its end.
// It skips the test only when not root and there is no cgroup v2
// hierarchy it may write: as root on Debian there always is one.
func testCgroups(t testing.TB) *Cgroups {
	t.Helper()
	cg, err := NewCgroups(zerolog.Nop(), "initsys-test."+strconv.Itoa(os.Getpid()))
	if err != nil && os.Geteuid() != 0 {
		t.Skipf("not root: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cg.Remove(); err != nil {
			t.Error(err)
		}
	})
	return cg
}

// testService returns the cgroup name of cg, killed, emptied and removed
// at the end of the test.
func testService(t testing.TB, cg *Cgroups, name string) *Cgroup {
	t.Helper()
	c, err := cg.Service(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), patience) // t's is done
		defer cancel()
		if err := c.Wait(ctx); err != nil {
			t.Error(err)
		}
		if err := c.Remove(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: got %v after Remove, want it gone", c.Dir(), err)
		}
	})
	return c
}

// TestCgroupKill: a process started into a cgroup, and its child that
// left for a session of its own, are both listed and both killed, with
// cgroup.kill and without.
func TestCgroupKill(t *testing.T) {
	cg := testCgroups(t)
	for _, each := range []bool{false, true} {
		t.Run(fmt.Sprintf("each=%v", each), func(t *testing.T) {
			svc := testService(t, cg, "kill")
			if each {
				svc.kill = false
			}
			p := helper("setsid-fork")
			p.Cgroup = svc
			c := spawn(t, p)
			orphan, err := strconv.Atoi(c.line(t))
			if err != nil {
				t.Fatal(err)
			}
			if sid, _ := unix.Getsid(orphan); sid != orphan {
				t.Fatalf("session of %d: got %d, want its own", orphan, sid)
			}
			pids, err := svc.PIDs()
			slices.Sort(pids)
			want := []int{c.pid, orphan}
			slices.Sort(want)
			if !slices.Equal(pids, want) || err != nil {
				t.Errorf("PIDs: got %v, %v, want %v", pids, err, want)
			}
			if got, err := svc.Populated(); !got || err != nil {
				t.Errorf("Populated: got %v, %v, want true", got, err)
			}
			if err := svc.Kill(); err != nil {
				t.Fatal(err)
			}
			if sig, _ := c.wait(t).Signaled(); sig != syscall.SIGKILL {
				t.Errorf("got signal %d, want %d", sig, syscall.SIGKILL)
			}
			if err := svc.Wait(ctxFor(t)); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(orphan, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process %d after Kill: got %v, want ESRCH", orphan, err)
			}
			if got, err := svc.Populated(); got || err != nil {
				t.Errorf("Populated after Wait: got %v, %v, want false", got, err)
			}
		})
	}
}

// TestCgroupSignal: Signal reaches every process of the cgroup, and only
// those.
func TestCgroupSignal(t *testing.T) {
	cg := testCgroups(t)
	svc := testService(t, cg, "signal")
	var in []*child
	for range 2 {
		p := helper("sleep")
		p.Cgroup = svc
		c := spawn(t, p)
		if got := c.line(t); got != "ready" {
			t.Fatalf("got %q, want ready", got)
		}
		in = append(in, c)
	}
	out := spawn(t, helper("sleep"))
	if got := out.line(t); got != "ready" {
		t.Fatalf("got %q, want ready", got)
	}
	if err := svc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, c := range in {
		if sig, _ := c.wait(t).Signaled(); sig != syscall.SIGTERM {
			t.Errorf("got signal %d, want %d", sig, syscall.SIGTERM)
		}
	}
	if err := syscall.Kill(out.pid, 0); err != nil {
		t.Errorf("process outside the cgroup: got %v, want it alive", err)
	}
}

// TestCgroupRemove: a populated cgroup cannot be removed, and nothing
// starts in a removed one.
func TestCgroupRemove(t *testing.T) {
	cg := testCgroups(t)
	svc := testService(t, cg, "remove")
	p := helper("sleep")
	p.Cgroup = svc
	c := spawn(t, p)
	if got := c.line(t); got != "ready" {
		t.Fatalf("got %q, want ready", got)
	}
	if err := svc.Remove(); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("Remove while populated: got %v, want EBUSY", err)
	}
	if err := svc.Kill(); err != nil {
		t.Fatal(err)
	}
	c.wait(t)
	if err := svc.Wait(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	if err := svc.Remove(); err != nil {
		t.Fatal(err)
	}
	if svc.FD() != -1 {
		t.Errorf("FD after Remove: got %d, want -1", svc.FD())
	}
	p = helper("sleep")
	p.Cgroup = svc
	if _, err := reaper.Spawn(p, nil); err == nil {
		t.Error("Spawn into a removed cgroup: got no error")
	}
}

// TestCgroupWaitDone: Wait returns the context's error when the cgroup
// stays populated.
func TestCgroupWaitDone(t *testing.T) {
	cg := testCgroups(t)
	svc := testService(t, cg, "wait")
	p := helper("sleep")
	p.Cgroup = svc
	c := spawn(t, p)
	if got := c.line(t); got != "ready" {
		t.Fatalf("got %q, want ready", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := svc.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want %v", err, context.Canceled)
	}
}

func TestCgroupNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b", "a\nb"} {
		if _, err := NewCgroups(zerolog.Nop(), name); err == nil {
			t.Errorf("NewCgroups(%q): got no error", name)
		}
		cg := &Cgroups{dir: t.TempDir()}
		if _, err := cg.Service(name); err == nil {
			t.Errorf("Service(%q): got no error", name)
		}
	}
}

func TestCgroupDir(t *testing.T) {
	const (
		unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
		hybrid  = "31 23 0:28 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n" +
			"32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n" +
			"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
		bound  = "50 40 0:26 /machine/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
		spaced = "60 23 0:26 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"
	)
	tests := []struct {
		info, path, want string
	}{
		{unified, "/system.slice/x.service", "/sys/fs/cgroup/system.slice/x.service"},
		{unified, "/", "/sys/fs/cgroup"},
		{hybrid, "/user.slice", "/sys/fs/cgroup/unified/user.slice"},
		{hybrid + unified, "/a", "/sys/fs/cgroup/a"},
		{unified + hybrid, "/a", "/sys/fs/cgroup/a"},
		{bound, "/machine/c1/svc", "/sys/fs/cgroup/svc"},
		{bound, "/machine/c1", "/sys/fs/cgroup"},
		{bound, "/machine/c10", ""},
		{bound, "/other", ""},
		{spaced, "/x", "/mnt/my cgroups/x"},
		{"31 23 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", "/", ""},
	}
	for _, tt := range tests {
		got, err := cgroupDir(tt.info, tt.path)
		if tt.want == "" {
			if !errors.Is(err, ErrNoCgroups) {
				t.Errorf("cgroupDir(%q, %q): got %q, %v, want ErrNoCgroups", tt.info, tt.path, got, err)
			}
			continue
		}
		if got != tt.want || err != nil {
			t.Errorf("cgroupDir(%q, %q): got %q, %v, want %q", tt.info, tt.path, got, err, tt.want)
		}
	}
}

// BenchmarkSpawnCgroup measures starting /bin/true in a session of its own
// and reaping it, as metad runs a stream service's instance, with and
// without a cgroup (BenchmarkSpawn is the first).
func BenchmarkSpawnCgroup(b *testing.B) {
	run := func(b *testing.B, cgroup *Cgroup) {
		p := &Proc{Path: "/bin/true", Argv: []string{"true"}, Files: []int{0, 1, 2}, Setsid: true, Cgroup: cgroup}
		benchSpawn(b, p)
	}
	b.Run("plain", func(b *testing.B) { run(b, nil) })
	b.Run("cgroup", func(b *testing.B) {
		cg := testCgroups(b)
		run(b, testService(b, cg, "bench"))
	})
}

// benchSpawn starts p and waits for its exit, b.N times.
func benchSpawn(b *testing.B, p *Proc) {
	b.Helper()
	exits := make(chan Exit, 1)
	for b.Loop() {
		if _, err := reaper.Spawn(p, func(e Exit) { exits <- e }); err != nil {
			b.Fatal(err)
		}
		if e := await(b, exits); e.Code() != 0 {
			b.Fatalf("got %v, want exit status 0", e)
		}
	}
}

// TestCgroupTakeOver: a second Cgroups of the same name, as a re-exec
// makes, finds the service cgroups and the processes in them.
func TestCgroupTakeOver(t *testing.T) {
	cg := testCgroups(t)
	svc := testService(t, cg, "over")
	p := helper("sleep")
	p.Cgroup = svc
	c := spawn(t, p)
	if got := c.line(t); got != "ready" {
		t.Fatalf("got %q, want ready", got)
	}
	again, err := NewCgroups(zerolog.Nop(), filepath.Base(cg.Dir()))
	if err != nil {
		t.Fatal(err)
	}
	if names, err := again.Services(); !slices.Equal(names, []string{"over"}) || err != nil {
		t.Errorf("Services: got %q, %v, want [over]", names, err)
	}
	svc2, err := again.Service("over")
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(svc2.FD())
	if pids, err := svc2.PIDs(); !slices.Equal(pids, []int{c.pid}) || err != nil {
		t.Errorf("PIDs: got %v, %v, want [%d]", pids, err, c.pid)
	}
	if err := again.Remove(); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("Remove with a service cgroup left: got %v, want EBUSY", err)
	}
}
