package initsys

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// The test binary re-runs itself as the children the tests need: with
// helperEnv set, TestMain runs the named helper instead of the tests.
const helperEnv = "INITSYS_TEST_HELPER"

// patience bounds every wait for an event: generous for a loaded CI
// machine, where the events normally arrive within milliseconds. No test
// waits this long unless it is failing.
const patience = 10 * time.Second

// drainGrace is the grace the PID 1 helper gives Drain: long enough for a
// child to die of SIGTERM, and short, since the test also waits for it to
// pass once (a child ignores SIGTERM).
const drainGrace = 200 * time.Millisecond

// reaper is the reaper of the test process, running for all the tests; the
// process is a subreaper, as metad is.
var reaper *Reaper

func TestMain(m *testing.M) {
	Shim() // as metad's main does: a shim execs its program here
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name, os.Args[1:]))
	}
	// As metad does: children get no descriptor the test inherited.
	for _, err := range []error{SetSubreaper(), CloseOnExecAll()} {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	reaper = NewReaper(zerolog.Nop())
	// Every exit must come from a wake-up, never from the childless
	// recheck: an exit that waited for it would hit a test's deadline.
	reaper.recheck = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { reaper.Run(ctx) })
	code := m.Run()
	cancel()
	wg.Wait()
	os.Exit(code)
}

// runHelper runs the helper child name and returns its exit status.
func runHelper(name string, args []string) int {
	switch name {
	case "exit":
		code, _ := strconv.Atoi(args[0])
		return code
	case "sleep": // until killed
		fmt.Println("ready")
		pauseForever()
	case "ignore-term": // until SIGKILL
		signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM)
		fmt.Println("ready")
		pauseForever()
	case "exit-on-eof":
		var b [1]byte
		for n, err := os.Stdin.Read(b[:]); n > 0 || err == nil; n, err = os.Stdin.Read(b[:]) {
		}
		return 7
	case "double-fork":
		return doubleForkHelper()
	case "list-fds":
		return listFDs()
	case "notify":
		return echoSignals()
	case "notify-then-status":
		return notifyThenStatus()
	case "spawn-while-childless":
		return spawnWhileChildless()
	case "pid1-drain":
		return pid1Drain()
	case "pid1-finish":
		f, _ := strconv.Atoi(args[0])
		return pid1Finish(Final(f))
	case "mounts":
		return mounts(args[0])
	case "foreground-parent":
		return foregroundParent()
	case "foreground-child":
		return foregroundChild()
	case "setsid-fork":
		return setsidFork()
	case "signal-states":
		return signalStates()
	}
	fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
	return 2
}

func pauseForever() {
	for {
		unix.Pause()
	}
}

// doubleForkHelper starts exit-on-eof, which keeps our stdin, prints its pid and
// exits, leaving it an orphan.
func doubleForkHelper() int {
	p := helper("exit-on-eof")
	p.Files = []int{0, 2, 2}
	attr, _ := p.attr()
	pid, err := syscall.ForkExec(p.Path, p.Argv, attr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(pid)
	return 0
}

// signalStates does what metad does first (Notify), then prints the
// signal state it was started with and those that cat /proc/self/status
// saw, started as the command of command mode (Proc.Signals from
// StartSignals) and as a service: "hooked start command service", each
// state as "IGNORED,BLOCKED" in hexadecimal; hooked says whether
// startEntry ran.
func signalStates() int {
	Notify(make(chan os.Signal, 1))
	r := NewReaper(zerolog.Nop())
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	go r.Run(ctx)
	start := StartSignals()
	_, hooked := savedStart()
	line := []string{strconv.FormatBool(hooked), fmt.Sprintf("%x,%x", start.Ignored, start.Blocked)}
	for _, sigs := range []*SignalState{&start, nil} {
		out, w, err := os.Pipe()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		exits := make(chan Exit, 1)
		p := &Proc{Path: "/bin/cat", Argv: []string{"cat", "/proc/self/status"}, Files: []int{0, int(w.Fd()), 2}, Signals: sigs}
		_, err = r.Spawn(p, func(e Exit) { exits <- e })
		w.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		status := readStatus(bufio.NewReader(out))
		out.Close()
		if e := exitBy(ctx, exits); e.Code() != 0 {
			fmt.Fprintln(os.Stderr, "cat:", e)
			return 1
		}
		ign, _ := strconv.ParseUint(status["SigIgn"], 16, 64)
		blk, _ := strconv.ParseUint(status["SigBlk"], 16, 64)
		line = append(line, fmt.Sprintf("%x,%x", ign, blk))
	}
	fmt.Println(strings.Join(line, " "))
	return 0
}

// setsidFork starts the helper sleep in a session of its own, prints its
// pid, and sleeps until killed: a service's process that escaped its
// process group and session.
func setsidFork() int {
	p := helper("sleep")
	p.Files = []int{0, 2, 2}
	p.Setsid = true
	attr, _ := p.attr()
	pid, err := syscall.ForkExec(p.Path, p.Argv, attr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(pid)
	pauseForever()
	return 0
}

// listFDs prints the descriptors the process has, without opening any
// other than the directory's own (os would add the poller's).
func listFDs() int {
	dir, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var names []string
	buf := make([]byte, 4096)
	for {
		n, err := syscall.ReadDirent(dir, buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if n == 0 {
			break
		}
		_, _, names = syscall.ParseDirent(buf[:n], -1, names)
	}
	var fds []string
	for _, name := range names {
		if name != strconv.Itoa(dir) {
			fds = append(fds, name)
		}
	}
	fmt.Println(strings.Join(fds, " "))
	return 0
}

// echoSignals prints the number of every signal Notify delivers, and
// exits 0 after SIGTERM.
func echoSignals() int {
	ch := make(chan os.Signal, 8)
	Notify(ch)
	fmt.Println("ready")
	for sig := range ch {
		fmt.Println(int(sig.(syscall.Signal)))
		if sig == syscall.SIGTERM {
			return 0
		}
	}
	return 1
}

// spawnWhileChildless runs a reaper of its own, in a process with no other
// child, and starts /bin/true three times, each after the last was reaped:
// each time the reaper has no child to wait for, and only the spawn can
// wake it. The childless recheck is an hour, so a missed wake-up shows as
// an exit that never comes. It prints each exit status.
func spawnWhileChildless() int {
	r := NewReaper(zerolog.Nop())
	r.recheck = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	go r.Run(ctx)
	for range 3 {
		exits := make(chan Exit, 1)
		p := &Proc{Path: "/bin/true", Argv: []string{"true"}, Files: []int{0, 1, 2}}
		if _, err := r.Spawn(p, func(e Exit) { exits <- e }); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		select {
		case e := <-exits:
			fmt.Println(e.Code())
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "no exit: the spawn did not wake the reaper")
			return 1
		}
		if err := r.WaitIdle(ctx); err != nil { // childless again
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// notifyThenStatus calls Notify, as metad does first thing, then starts
// cat /proc/self/status on its stdout and returns cat's status.
func notifyThenStatus() int {
	Notify(make(chan os.Signal, 1))
	r := NewReaper(zerolog.Nop())
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	go r.Run(ctx)
	exits := make(chan Exit, 1)
	p := &Proc{Path: "/bin/cat", Argv: []string{"cat", "/proc/self/status"}, Files: []int{0, 1, 2}}
	if _, err := r.Spawn(p, func(e Exit) { exits <- e }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return exitBy(ctx, exits).Code()
}

// pid1Drain runs as PID 1 of a new PID namespace: it starts a child that
// dies of SIGTERM and one that ignores it, drains, and prints what
// happened as "machine=BOOL drain=ERR running=N sleep=EXIT ignore=EXIT".
func pid1Drain() int {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "not PID 1")
		return 2
	}
	r := NewReaper(zerolog.Nop())
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	go r.Run(ctx)

	var exits [2]chan Exit
	for i, name := range []string{"sleep", "ignore-term"} {
		exits[i] = make(chan Exit, 1)
		p := helper(name)
		out, w, err := os.Pipe()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		p.Files = []int{0, int(w.Fd()), 2}
		_, err = r.Spawn(p, func(e Exit) { exits[i] <- e })
		w.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if line, err := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
			fmt.Fprintf(os.Stderr, "%s: %q, %v\n", name, line, err)
			return 1
		}
		out.Close()
	}
	err := r.Drain(ctx, drainGrace)
	fmt.Printf("machine=%v drain=%v running=%d sleep=%v ignore=%v\n",
		MachineInit(), err, r.Running(), exitBy(ctx, exits[0]), exitBy(ctx, exits[1]))
	return 0
}

// pid1Finish calls Finish as PID 1 of a new PID namespace; it returns only
// if Finish fails. It refuses to run anywhere else.
func pid1Finish(f Final) int {
	if os.Getpid() != 1 || MachineInit() {
		fmt.Fprintln(os.Stderr, "not PID 1 of a child PID namespace")
		return 2
	}
	fmt.Fprintln(os.Stderr, Finish(f))
	return 3
}

// mounts runs in a new mount namespace: it mounts a tmpfs on root, the
// essentials under it twice, and prints "ok" or what went wrong.
func mounts(root string) int {
	// Mounts under a shared mount would propagate to the test's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, ""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var problems []string
	if err := mountUnder(root); err != nil {
		problems = append(problems, "first: "+err.Error())
	}
	if err := mountUnder(root); err != nil {
		problems = append(problems, "second: "+err.Error())
	}
	plain := filepath.Join(root, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		problems = append(problems, err.Error())
	}
	want := map[string]bool{"proc": true, "sys": true, "dev": true, "run": true, "sys/fs/cgroup": true, "plain": false}
	for dir, mounted := range want {
		got, err := isMountPoint(filepath.Join(root, dir))
		if err != nil || got != mounted {
			problems = append(problems, fmt.Sprintf("%s: mount point %v (%v), want %v", dir, got, err, mounted))
		}
	}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		problems = append(problems, err.Error())
	}
	for _, dir := range []string{"proc", "sys", "dev", "run", "sys/fs/cgroup"} {
		if n := strings.Count(string(info), " "+filepath.Join(root, dir)+" "); n != 1 {
			problems = append(problems, fmt.Sprintf("%s: mounted %d times, want 1", dir, n))
		}
	}
	if _, err := os.Stat(filepath.Join(root, "proc", "self", "status")); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		fmt.Println(strings.Join(problems, "; "))
		return 0
	}
	fmt.Println("ok")
	return 0
}

// foregroundParent runs as a session leader on a terminal: it hands the
// terminal to foreground-child and exits with its status, or 10 if it was
// not in the foreground to begin with, 11 if the start failed.
func foregroundParent() int {
	if !InForeground(0) {
		return 10
	}
	r := NewReaper(zerolog.Nop())
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	go r.Run(ctx)
	exits := make(chan Exit, 1)
	p := helper("foreground-child")
	p.Files = []int{0, 1, 2}
	p.Foreground = true
	if _, err := r.Spawn(p, func(e Exit) { exits <- e }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 11
	}
	return exitBy(ctx, exits).Code()
}

// exitBy returns the next exit from exits, or a made-up "exit status 99"
// once ctx is done.
func exitBy(ctx context.Context, exits <-chan Exit) Exit {
	select {
	case e := <-exits:
		return e
	case <-ctx.Done():
		return Exit{Status: 99 << 8}
	}
}

// foregroundChild exits 0 if it leads its own process group and that
// group is the foreground group of its terminal.
func foregroundChild() int {
	fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	switch {
	case err != nil:
		return 12
	case unix.Getpgrp() != os.Getpid():
		return 13
	case fg != os.Getpid():
		return 14
	}
	return 0
}

// helper returns the Proc of the helper child name, with stdin, stdout and
// stderr those of the test.
func helper(name string, args ...string) *Proc {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	env := []string{helperEnv + "=" + name}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, helperEnv+"=") {
			env = append(env, kv)
		}
	}
	return &Proc{
		Path:  exe,
		Argv:  append([]string{exe}, args...),
		Env:   env,
		Files: []int{0, 1, 2},
	}
}

// child is a started child: its pid, its exit once reaped, and its stdout
// when the test asked for it.
type child struct {
	pid    int
	exit   chan Exit
	out    *bufio.Reader
	reaped bool // the test has had the exit
}

// spawn starts p with the test reaper, its stdout a pipe to c.out (with a
// read deadline of patience) unless p.Files says otherwise. The child is
// killed at the end of the test if the test has not seen it exit.
func spawn(t *testing.T, p *Proc) *child {
	t.Helper()
	c := &child{exit: make(chan Exit, 1)}
	var w *os.File
	if len(p.Files) >= 2 && p.Files[1] == 1 {
		r, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		r.SetReadDeadline(time.Now().Add(patience))
		c.out, w = bufio.NewReader(r), pw
		p.Files = append([]int{p.Files[0], int(pw.Fd())}, p.Files[2:]...)
	}
	pid, err := reaper.Spawn(p, func(e Exit) { c.exit <- e })
	if w != nil {
		w.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	c.pid = pid
	c.stopAtCleanup(t)
	return c
}

// line returns the next line the child printed, without the newline.
func (c *child) line(t *testing.T) string {
	t.Helper()
	s, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("cannot read from child %d: %v (got %q)", c.pid, err, s)
	}
	return strings.TrimSuffix(s, "\n")
}

// wait returns the child's exit, failing the test after patience.
func (c *child) wait(t *testing.T) Exit {
	t.Helper()
	e := await(t, c.exit)
	c.reaped = true
	return e
}

// await returns the next exit from exits, failing the test after patience.
func await(t testing.TB, exits <-chan Exit) Exit {
	t.Helper()
	select {
	case e := <-exits:
		return e
	case <-time.After(patience):
		t.Fatalf("no exit after %v", patience)
		return Exit{}
	}
}

// stopAtCleanup kills the child at the end of the test unless the test
// has seen it exit, so that no test leaves a child behind.
func (c *child) stopAtCleanup(t *testing.T) {
	t.Cleanup(func() {
		if c.reaped {
			return
		}
		syscall.Kill(c.pid, syscall.SIGKILL)
		c.wait(t)
	})
}
