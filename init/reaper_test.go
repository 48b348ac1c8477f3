package initsys

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSpawnExit(t *testing.T) {
	before := time.Now()
	c := spawn(t, helper("exit", "3"))
	e := c.wait(t)
	if e.PID != c.pid || e.Code() != 3 || e.Time.Before(before) {
		t.Errorf("got %+v (%v), want pid %d, exit status 3, reaped after %v", e, e, c.pid, before)
	}
}

func TestSpawnKilled(t *testing.T) {
	c := spawn(t, helper("sleep"))
	if got := c.line(t); got != "ready" {
		t.Fatalf("got %q, want %q", got, "ready")
	}
	if err := Forward(c.pid, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	if e := c.wait(t); e.Code() != 137 {
		t.Errorf("got %v, want signal 9 (code 137)", e)
	}
}

func TestSpawnErrors(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data") // not executable
	if err := os.WriteFile(data, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk") // executable, but no known format
	if err := os.WriteFile(junk, []byte("\x00\x01\x02junk"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want error
		code int
	}{
		{filepath.Join(dir, "missing"), syscall.ENOENT, 127},
		{data, syscall.EACCES, 126},
		{junk, syscall.ENOEXEC, 126},
	}
	orphans := reaper.Orphans()
	for _, tt := range tests {
		pid, err := reaper.Spawn(&Proc{Path: tt.path, Argv: []string{tt.path}}, func(Exit) {
			t.Errorf("%s: exit reported for a start that failed", tt.path)
		})
		if pid != 0 || !errors.Is(err, tt.want) {
			t.Errorf("Spawn(%s): got %d, %v, want 0, %v", tt.path, pid, err, tt.want)
		}
		if want := `cannot start "` + tt.path + `": `; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %v, want it to start with %s", err, want)
		}
		if got := StartCode(err); got != tt.code {
			t.Errorf("StartCode: got %d, want %d", got, tt.code)
		}
	}
	// The failed children were reaped by ForkExec, not taken for orphans.
	if err := reaper.WaitIdle(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	if got := reaper.Orphans(); got != orphans {
		t.Errorf("orphans: got %d, want %d", got, orphans)
	}

	p := helper("exit", "0")
	p.Setsid, p.Foreground = true, true
	if _, err := reaper.Spawn(p, nil); err == nil {
		t.Error("Setsid and Foreground: got no error")
	}
	p.Setsid = false
	p.Files = nil
	if _, err := reaper.Spawn(p, nil); err == nil {
		t.Error("Foreground without a terminal: got no error")
	}
}

// TestSpawnConcurrent starts children from many goroutines at once; each
// exit must reach its own callback, exactly once.
func TestSpawnConcurrent(t *testing.T) {
	const n = 50
	var (
		mu    sync.Mutex
		calls = make(map[int]int) // pid → exits delivered
		exits = make(chan Exit, n)
		pids  = make(chan int, n)
		wg    sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			p := helper("exit", strconv.Itoa(i))
			p.Setsid = true
			pid, err := reaper.Spawn(p, func(e Exit) {
				mu.Lock()
				calls[e.PID]++
				mu.Unlock()
				exits <- e
			})
			if err != nil {
				t.Error(err)
			}
			pids <- pid
		})
	}
	wg.Wait()
	close(pids)
	codes := make(map[int]bool)
	for range n {
		codes[await(t, exits).Code()] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for pid := range pids {
		if calls[pid] != 1 {
			t.Errorf("pid %d: %d exits delivered, want 1", pid, calls[pid])
		}
	}
	if len(codes) != n {
		t.Errorf("got %d distinct exit codes, want %d", len(codes), n)
	}
	if got := reaper.Running(); got != 0 {
		t.Errorf("Running: got %d, want 0", got)
	}
}

// doubleFork runs the double-fork helper and returns the pid of the
// orphan it leaves (now the test's child, which is a subreaper) and the
// pipe whose closing makes the orphan exit with status 7.
func doubleFork(t *testing.T) (int, *os.File) {
	t.Helper()
	stdin, release, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { release.Close() })
	p := helper("double-fork")
	p.Files = []int{int(stdin.Fd()), 1, 2}
	c := spawn(t, p)
	stdin.Close()
	line := c.line(t)
	if e := c.wait(t); e.Code() != 0 {
		t.Fatalf("double-fork: got %v, want exit status 0", e)
	}
	pid, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("double-fork printed %q", line)
	}
	return pid, release
}

// TestOrphan: an orphan nobody adopts is reaped and counted, and its exit
// is kept for a late Adopt, once.
func TestOrphan(t *testing.T) {
	orphans := reaper.Orphans()
	pid, release := doubleFork(t)
	release.Close()
	if err := reaper.WaitIdle(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	if got := reaper.Orphans(); got != orphans+1 {
		t.Errorf("orphans: got %d, want %d", got, orphans+1)
	}
	exits := make(chan Exit, 1)
	if err := reaper.Adopt(pid, func(e Exit) { exits <- e }); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-exits:
		if e.PID != pid || e.Code() != 7 {
			t.Errorf("got %d %v, want %d exit status 7", e.PID, e, pid)
		}
	default:
		t.Error("Adopt of a reaped orphan did not call done at once")
	}
	if err := reaper.Adopt(pid, nil); !errors.Is(err, ErrNotChild) {
		t.Errorf("second Adopt: got %v, want %v", err, ErrNotChild)
	}
}

// TestAdopt: an adopted live orphan's exit goes to its new owner, and is
// not counted as an orphan's.
func TestAdopt(t *testing.T) {
	orphans := reaper.Orphans()
	pid, release := doubleFork(t)
	exits := make(chan Exit, 1)
	if err := reaper.Adopt(pid, func(e Exit) { exits <- e }); err != nil {
		t.Fatal(err)
	}
	if err := reaper.Adopt(pid, nil); err == nil {
		t.Error("second Adopt of a live child: got no error")
	}
	release.Close()
	if e := await(t, exits); e.PID != pid || e.Code() != 7 {
		t.Errorf("got %d %v, want %d exit status 7", e.PID, e, pid)
	}
	if got := reaper.Orphans(); got != orphans {
		t.Errorf("orphans: got %d, want %d", got, orphans)
	}
}

func TestAdoptNotChild(t *testing.T) {
	for _, pid := range []int{os.Getpid(), os.Getppid(), 0, -1} {
		if err := reaper.Adopt(pid, nil); !errors.Is(err, ErrNotChild) {
			t.Errorf("Adopt(%d): got %v, want %v", pid, err, ErrNotChild)
		}
	}
}

func TestRecentExitsBounded(t *testing.T) {
	r := &Reaper{}
	for pid := 1; pid <= recentExits+10; pid++ {
		r.remember(Exit{PID: pid})
	}
	r.remember(Exit{PID: 20, Status: 1 << 8}) // the latest exit of a pid wins
	if len(r.recent) != recentExits {
		t.Fatalf("got %d recent exits, want %d", len(r.recent), recentExits)
	}
	if _, ok := r.forget(10); ok {
		t.Error("pid 10: got an exit, want it dropped as the oldest")
	}
	if e, ok := r.forget(20); !ok || e.Code() != 1 {
		t.Errorf("pid 20: got %v, %v, want exit status 1", e, ok)
	}
	if _, ok := r.forget(20); ok {
		t.Error("pid 20 again: got an exit, want none")
	}
}

// TestWaitIdle: WaitIdle does not return while a child lives, and returns
// once it is reaped, after its exit was delivered.
func TestWaitIdle(t *testing.T) {
	c := spawn(t, helper("sleep"))
	if got := c.line(t); got != "ready" {
		t.Fatalf("got %q, want %q", got, "ready")
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := reaper.WaitIdle(canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("with a child alive: got %v, want %v", err, context.Canceled)
	}

	idle := make(chan error, 1)
	ctx := ctxFor(t)
	go func() { idle <- reaper.WaitIdle(ctx) }()
	if err := Forward(c.pid, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	if err := <-idle; err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exit:
		c.reaped = true
	default:
		t.Error("WaitIdle returned before the exit was delivered")
	}
}

// TestDescriptors: a child has 0, 1, 2 and the Files it is given, and no
// other descriptor of the test's, which has a few open.
func TestDescriptors(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	tests := []struct {
		files []int
		want  string
	}{
		{[]int{0, 1, 2}, "0 1 2"},
		{[]int{0, 1, 2, int(r.Fd())}, "0 1 2 3"},
		{[]int{0, 1, 2, -1, int(w.Fd())}, "0 1 2 4"}, // (a Go child reopens 0, 1, 2 if closed)
	}
	for _, tt := range tests {
		p := listFDsHelper()
		p.Files = tt.files
		c := spawn(t, p)
		if got := c.line(t); got != tt.want {
			t.Errorf("Files %v: got %q, want %q", tt.files, got, tt.want)
		}
		c.wait(t)
	}
}

// listFDsHelper returns the helper list-fds, with the Go runtime told not
// to keep its cgroup files open, which it would list too.
func listFDsHelper() *Proc {
	p := helper("list-fds")
	p.Env = append([]string{"GODEBUG=containermaxprocs=0"}, p.Env...)
	return p
}

// TestCloseOnExecAll: a descriptor opened without close-on-exec, as one
// inherited would be, leaks into children until CloseOnExecAll.
func TestCloseOnExecAll(t *testing.T) {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	listFDs := func() string {
		c := spawn(t, listFDsHelper())
		defer c.wait(t)
		return c.line(t)
	}
	leaked := "0 1 2 " + strconv.Itoa(fd)
	if got := listFDs(); got != leaked {
		t.Fatalf("before: got %q, want %q", got, leaked)
	}
	if err := CloseOnExecAll(); err != nil {
		t.Fatal(err)
	}
	if got := listFDs(); got != "0 1 2" {
		t.Errorf("after: got %q, want %q", got, "0 1 2")
	}
}

// TestChildSignals: a child of metad starts with an empty signal mask and
// no ignored signal, though metad has handlers for most and the Go runtime
// blocks signals around fork, and whatever the test itself was started
// with (SIGHUP ignored under nohup, SIGINT and SIGQUIT in a background
// job): the helper does what metad does first, Notify, and then starts
// cat /proc/self/status. (The test process itself calls no Notify, so its
// own children keep SIGHUP and SIGINT ignored if it was started so: the Go
// runtime leaves those two alone.)
func TestChildSignals(t *testing.T) {
	c := spawn(t, helper("notify-then-status"))
	status := readStatus(c.out)
	if e := c.wait(t); e.Code() != 0 {
		t.Fatalf("got %v, want exit status 0", e)
	}
	for _, field := range []string{"SigBlk", "SigIgn"} {
		if mask, err := strconv.ParseUint(status[field], 16, 64); mask != 0 || err != nil {
			t.Errorf("%s: got %q, want 0", field, status[field])
		}
	}
}

func TestCredential(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	const nobody = "65534"
	status := procStatus(t, &Proc{Cred: &syscall.Credential{Uid: 65534, Gid: 65534}})
	for _, field := range []string{"Uid", "Gid"} {
		for _, id := range strings.Fields(status[field]) { // real, effective, saved, file system
			if id != nobody {
				t.Errorf("%s: got %q, want %s everywhere", field, status[field], nobody)
				break
			}
		}
	}
	if status["Groups"] != "" {
		t.Errorf("Groups: got %q, want none", status["Groups"])
	}
}

// procStatus starts cat /proc/self/status as p says otherwise, and returns
// the fields cat printed: the child's state as the kernel saw it at exec,
// with no Go runtime in between.
func procStatus(t *testing.T, p *Proc) map[string]string {
	t.Helper()
	const cat = "/bin/cat"
	if _, err := os.Stat(cat); err != nil {
		t.Fatal(err)
	}
	p.Path, p.Argv, p.Files = cat, []string{"cat", "/proc/self/status"}, []int{0, 1, 2}
	c := spawn(t, p)
	status := readStatus(c.out)
	if e := c.wait(t); e.Code() != 0 {
		t.Fatalf("cat: got %v, want exit status 0", e)
	}
	return status
}

// readStatus reads /proc/PID/status text up to EOF and returns its fields.
func readStatus(r *bufio.Reader) map[string]string {
	status := make(map[string]string)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return status
		}
		if key, value, ok := strings.Cut(line, ":"); ok {
			status[key] = strings.TrimSpace(value)
		}
	}
}

// TestInheritedIgnore: started with signals ignored (nohup, a background
// job, a careless parent), metad still starts its children with none
// ignored once it has called Notify. The helper calls Notify, then starts
// cat /proc/self/status.
func TestInheritedIgnore(t *testing.T) {
	const sh = "/bin/sh"
	if _, err := os.Stat(sh); err != nil {
		t.Fatal(err)
	}
	p := helper("notify-then-status")
	p.Argv = []string{"sh", "-c", `trap '' HUP INT QUIT TSTP TTIN TTOU USR1; exec "$0"`, p.Path}
	p.Path = sh
	c := spawn(t, p)
	status := readStatus(c.out)
	if e := c.wait(t); e.Code() != 0 {
		t.Fatalf("got %v, want exit status 0", e)
	}
	if mask, err := strconv.ParseUint(status["SigIgn"], 16, 64); mask != 0 || err != nil {
		t.Errorf("SigIgn: got %q, want 0", status["SigIgn"])
	}
}

// TestForeground starts a session leader on a new terminal, which hands
// the terminal to a Foreground child; the child checks that it leads the
// terminal's foreground group.
func TestForeground(t *testing.T) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()

	p := helper("foreground-parent")
	attr, err := p.attr()
	if err != nil {
		t.Fatal(err)
	}
	attr.Files = []uintptr{tty.Fd(), tty.Fd(), 2}
	attr.Sys.Setsid, attr.Sys.Setctty, attr.Sys.Ctty = true, true, 0
	exits := make(chan Exit, 1)
	if _, err := reaper.start(p.Path, p.Argv, attr, func(e Exit) { exits <- e }); err != nil {
		t.Fatal(err)
	}
	if e := await(t, exits); e.Code() != 0 {
		t.Errorf("got %v, want exit status 0 (10: parent not in the foreground, 11: start failed, 12-14: child not in the foreground)", e)
	}
}

func BenchmarkSpawn(b *testing.B) {
	const path = "/bin/true"
	if _, err := os.Stat(path); err != nil {
		b.Skip(err)
	}
	p := &Proc{Path: path, Argv: []string{"true"}, Files: []int{0, 1, 2}, Setsid: true}
	exits := make(chan Exit, 1)
	done := func(e Exit) { exits <- e }
	for b.Loop() {
		if _, err := reaper.Spawn(p, done); err != nil {
			b.Fatal(err)
		}
		if e := <-exits; e.Code() != 0 {
			b.Fatalf("got %v, want exit status 0", e)
		}
	}
}

// ctxFor returns a context done after patience or at the end of the test.
func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	t.Cleanup(cancel)
	return ctx
}

// TestSpawnWhileChildless checks that a spawn wakes a reaper that had no
// child to wait for (see spawnWhileChildless).
func TestSpawnWhileChildless(t *testing.T) {
	c := spawn(t, helper("spawn-while-childless"))
	for i := range 3 {
		if got := c.line(t); got != "0" {
			t.Fatalf("exit %d: got %q, want 0", i+1, got)
		}
	}
	if got := c.wait(t); got.Code() != 0 {
		t.Errorf("got %v, want exit status 0", got)
	}
}

// TestStuckCallback: an exit callback that does not return (against its
// contract) stops reaping, but neither starting (Spawn) nor Pause, and
// WaitIdle's error names it.
func TestStuckCallback(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	p := &Proc{Path: "/bin/true", Argv: []string{"true"}, Files: []int{0, 1, 2}}
	stuck, err := reaper.Spawn(p, func(Exit) { close(entered); <-release })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(patience):
		t.Fatal("no exit")
	}

	spawned := make(chan error, 1)
	exits := make(chan Exit, 1)
	go func() {
		_, err := reaper.Spawn(p, func(e Exit) { exits <- e })
		spawned <- err
	}()
	select {
	case err := <-spawned:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(patience):
		t.Fatal("Spawn blocked by a stuck exit callback")
	}

	defer func(d time.Duration) { reaper.patience = d }(reaper.patience)
	reaper.patience = 10 * time.Millisecond
	paused := make(chan func(), 1)
	go func() { paused <- reaper.Pause() }()
	select {
	case resume := <-paused:
		resume()
	case <-time.After(patience):
		t.Fatal("Pause blocked by a stuck exit callback")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = reaper.WaitIdle(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", stuck)) {
		t.Errorf("WaitIdle: got %v, want %v naming process %d", err, context.Canceled, stuck)
	}

	close(release)
	released = true
	if e := await(t, exits); e.Code() != 0 {
		t.Errorf("got %v, want exit status 0", e)
	}
}
