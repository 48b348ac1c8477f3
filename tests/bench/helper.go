package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// helperFlag, as the first argument, makes the bench binary one of its
// helpers instead of the driver.
const helperFlag = "-helper"

// runHelper runs the helper named by args[0] and returns its exit status.
func runHelper(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "bench: -helper needs a name")
		return 2
	}
	var err error
	switch args[0] {
	case "nsinit":
		return nsinit(args[1:])
	case "reap-main":
		err = reapMain(args[1:])
	case "reap-spawn":
		err = reapSpawn(args[1:])
	case "load":
		err = loadCommand(args[1:])
	case "stream-loop":
		err = streamLoop(args[1:])
	case "spawn-sleeps":
		err = spawnSleeps(args[1:])
	default:
		err = fmt.Errorf("unknown helper %q", args[0])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// nsinit is PID 1 of a subject's namespace: it starts the subject,
// forwards termination signals to it, reaps whatever is re-parented to it
// and exits with the subject's status. It keeps the subject from being
// PID 1, which changes how some supervisors behave.
func nsinit(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "bench nsinit: no command")
		return 2
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench nsinit: %v\n", err)
		return 127
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench nsinit: cannot start %s: %v\n", path, err)
		return 126
	}
	go func() {
		for s := range sigs {
			syscall.Kill(pid, s.(syscall.Signal))
		}
	}()
	for {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return 1
		}
		if wpid == pid {
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
}

// reapMain is the command an init runs for the reaping benchmark (args:
// N, the tiny program, a result file). It has a helper start N tiny
// processes that block reading one pipe, waits for that helper to exit so
// that all N become orphans of PID 1, then closes the pipe: all N exit at
// once and PID 1 must reap them. It writes the time from the close until
// no pid of the N exists any more (kill(pid, 0) fails with ESRCH only
// once a zombie is reaped).
func reapMain(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: reap-main N TINY RESULT")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var gate, out [2]int
	if err := syscall.Pipe2(gate[:], syscall.O_CLOEXEC); err != nil {
		return err
	}
	if err := syscall.Pipe2(out[:], syscall.O_CLOEXEC); err != nil {
		return err
	}
	spawner, err := syscall.ForkExec(self, []string{self, helperFlag, "reap-spawn", args[0], args[1]},
		&syscall.ProcAttr{Files: []uintptr{uintptr(gate[0]), uintptr(out[1]), 2}})
	if err != nil {
		return fmt.Errorf("cannot start the spawner: %w", err)
	}
	syscall.Close(gate[0])
	syscall.Close(out[1])
	var pids []int
	sc := bufio.NewScanner(os.NewFile(uintptr(out[0]), "pids"))
	for sc.Scan() {
		pid, err := strconv.Atoi(sc.Text())
		if err != nil {
			return fmt.Errorf("cannot read a pid: %w", err)
		}
		pids = append(pids, pid)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(spawner, &ws, 0, nil); err != nil {
		return err
	}
	if ws.ExitStatus() != 0 || len(pids) == 0 {
		return fmt.Errorf("the spawner failed (%v) after %d processes", ws, len(pids))
	}

	start := time.Now()
	syscall.Close(gate[1]) // every orphan reads end of file and exits
	deadline := start.Add(60 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("pid %d still exists after %v: PID 1 does not reap", pid, time.Since(start).Round(time.Millisecond))
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	elapsed := time.Since(start)
	return os.WriteFile(args[2], fmt.Appendf(nil, "%d %d\n", len(pids), elapsed.Nanoseconds()), 0o644)
}

// reapSpawn starts N tiny programs with its own stdin (the gate pipe) as
// theirs, prints their pids and exits, orphaning them.
func reapSpawn(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: reap-spawn N TINY")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	attr := &syscall.ProcAttr{Files: []uintptr{0, null.Fd(), 2}}
	w := bufio.NewWriter(os.Stdout)
	for range n {
		pid, err := syscall.ForkExec(args[1], []string{"tiny"}, attr)
		if err != nil {
			return fmt.Errorf("cannot start %s: %w", args[1], err)
		}
		fmt.Fprintln(w, pid)
	}
	return w.Flush()
}

// streamLoop is the reference stream server (args: PORT PROGRAM
// [ARG...]): the least a Go program can do per connection, on one
// thread, with no goroutine, channel or signal: a blocking accept4, the
// connection as fds 0 and 1 of the program (ForkExec, as metad), close,
// and wait4(WNOHANG) for whatever has ended. It keeps no state, so it has
// no limit, no backoff and no control: it shows what the machine allows.
func streamLoop(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: stream-loop PORT PROGRAM [ARG...]")
	}
	port, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	if err := syscall.Listen(fd, 256); err != nil {
		return err
	}
	argv := args[1:]
	attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 0, 2}, Sys: &syscall.SysProcAttr{Setsid: true}}
	for {
		c, _, err := syscall.Accept4(fd, syscall.SOCK_CLOEXEC)
		if err != nil {
			continue
		}
		attr.Files[0], attr.Files[1] = uintptr(c), uintptr(c)
		if _, err := syscall.ForkExec(argv[0], argv, attr); err != nil {
			fmt.Fprintf(os.Stderr, "cannot start %s: %v\n", argv[0], err)
		}
		syscall.Close(c)
		for {
			var ws syscall.WaitStatus
			if pid, _ := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
	}
}

// spawnSleeps is the floor of the start-up benchmark (args: N PROGRAM
// [ARG...]): it starts N instances one after the other, as fast as Go's
// ForkExec allows, then waits to be killed with its namespace.
func spawnSleeps(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: spawn-sleeps N PROGRAM [ARG...]")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{null.Fd(), 1, 2}, Sys: &syscall.SysProcAttr{Setsid: true}}
	for range n {
		if _, err := syscall.ForkExec(args[1], args[1:], attr); err != nil {
			return err
		}
	}
	select {}
}

// loadCommand runs the load generator alone (args: PORT CLIENTS
// DURATION), for profiling a server by hand:
//
//	go run ./tests/bench -helper load 7001 8 10s
func loadCommand(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: load PORT CLIENTS DURATION")
	}
	port, err1 := strconv.Atoi(args[0])
	conc, err2 := strconv.Atoi(args[1])
	d, err3 := time.ParseDuration(args[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	r := load(port, conc, d)
	fmt.Printf("%.0f conn/s  p50 %v  p99 %v  errors %d\n", r.rate(), r.pct(50), r.pct(99), r.errs)
	if r.firstErr != nil {
		fmt.Printf("first error: %v\n", r.firstErr)
	}
	return nil
}

// readReapResult parses what reapMain wrote: processes and nanoseconds.
func readReapResult(path string) (int, time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("cannot parse %q", b)
	}
	n, err1 := strconv.Atoi(f[0])
	ns, err2 := strconv.ParseInt(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	return n, time.Duration(ns), nil
}
