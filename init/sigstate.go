package initsys

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SignalState is what a process passes on to a program it executes of its
// signal handling: the signals it ignores (an ignored disposition
// survives exec, a caught one becomes the default) and those it blocks.
// Bit n-1 stands for signal n. The zero value is a fresh process's, and
// what metad's services get: nothing ignored, nothing blocked.
type SignalState struct {
	Ignored uint64
	Blocked uint64
}

// has reports whether sig is in set (Ignored or Blocked).
func has(set uint64, sig syscall.Signal) bool {
	return sig >= 1 && sig <= maxSignal && set&(1<<(sig-1)) != 0
}

// String returns the state as /proc/PID/status shows it:
// "SigIgn: 0000000000000001 SigBlk: 0000000000000000".
func (s SignalState) String() string {
	return fmt.Sprintf("SigIgn: %016x SigBlk: %016x", s.Ignored, s.Blocked)
}

// start is the signal state metad was started with, taken once.
var start struct {
	once  sync.Once
	state SignalState
}

// StartSignals returns the signal state metad was started with, for the
// command of command mode, which gets it (Proc.Signals) as tini's child
// does. It is taken at the first call, which must come before anything
// changes the dispositions: Notify and NewReaper call it first thing.
//
// The Go runtime changes dispositions and the mask before main runs: it
// installs its handler for most signals, and unblocks on every thread the
// signals it needs. Of the start state, only these survive for metad to
// see: the ignored SIGHUP, SIGINT, SIGCONT, SIGTSTP, SIGTTIN, SIGTTOU and
// signals 32 and 34, and the blocked signals the runtime lets a program
// block (SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM, SIGCONT, SIGTSTP, SIGTTIN,
// SIGTTOU, SIGXCPU to SIGVTALRM, SIGWINCH, SIGIO, SIGPWR, 35 to 64).
// A metad linked with its own entry point (see startEntry) saves the whole
// state before the runtime starts, and StartSignals returns that instead.
func StartSignals() SignalState {
	start.once.Do(func() {
		if s, ok := savedStart(); ok {
			start.state = s
			return
		}
		start.state = currentSignals()
	})
	return start.state
}

// currentSignals returns the dispositions of the process and the mask of
// the calling thread as they are now.
func currentSignals() SignalState {
	var s SignalState
	for sig := syscall.Signal(1); sig <= maxSignal; sig++ {
		if ignored(sig) {
			s.Ignored |= 1 << (sig - 1)
		}
	}
	s.Blocked, _ = threadMask(nil)
	return s
}

// threadMask sets the calling thread's signal mask to *set, if set is not
// nil, and returns the mask it had. The caller must be locked to its
// thread for the change to mean anything.
func threadMask(set *uint64) (uint64, error) {
	var old uint64
	_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK,
		uintptr(unsafe.Pointer(set)), uintptr(unsafe.Pointer(&old)), 8, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return old, nil
}

// setIgnored gives every signal of set but SIGKILL and SIGSTOP the
// disposition SIG_IGN, for the program this process executes next.
func setIgnored(set uint64) error {
	for sig := syscall.Signal(1); sig <= maxSignal; sig++ {
		if !has(set, sig) || sig == syscall.SIGKILL || sig == syscall.SIGSTOP {
			continue
		}
		act := [4]uint64{sigIgn} // SIG_IGN, no flags, an empty mask
		_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
		if errno != 0 {
			return fmt.Errorf("cannot ignore signal %d: %w", sig, errno)
		}
	}
	return nil
}

// How a child gets a signal state other than the defaults.
//
// Go's fork child cannot be told what to do between fork and exec: it
// resets to the default the signals that the runtime handles and sets
// the mask to the one the forking thread had when it forked. So:
//
//   - The mask: Spawn locks its goroutine to its thread, sets that
//     thread's mask to the one the child must have, forks, and sets it
//     back. The child has that mask from its first instruction. Without
//     this, a child would inherit the signals metad was started with
//     blocked (those the runtime lets a thread block), services too.
//   - Ignored signals: the child cannot keep one that metad handles, and
//     metad handles them all (Notify). So Spawn starts metad's own binary
//     (/proc/self/exe) as a shim, which sets the dispositions and the mask
//     and executes the program; it reports an exec failure on a pipe, so
//     that Spawn fails as it would without it. This costs a second exec
//     and a Go runtime's start (a few milliseconds), once, for the
//     command. The same shim applies a Proc's limits, nice value and
//     umask (see limits.go), for every start of such a service.
//
// Keeping the command's ignored signals out of Notify instead would leave
// them ignored in every service too, and would not cover the signals the
// runtime takes over before main.

// shimEnv marks the environment of a shim: "IGNORED,BLOCKED,FD", the
// state in hexadecimal and the descriptor of the error pipe. The shim
// removes it before executing the program.
const shimEnv = "METAD_SIGNAL_SHIM"

// shimPatience bounds how long Spawn waits for a shim to execute the
// program: a Go runtime starts in a millisecond or two; an exec that
// hangs (a dead network file system) is not waited for longer.
const shimPatience = 10 * time.Second

// Shim makes this process the shim Spawn started, if it is one (see
// Proc.Signals, Proc.Rlimits, Proc.Nice and Proc.Umask): it sets the
// signal state and the settings it was given and executes the program,
// or exits 127 (not found) or 126 (cannot execute or cannot apply a
// setting) after reporting the error to Spawn. Otherwise it returns at
// once, having done nothing. metad's main calls it first thing, before
// any other work and before Notify; a test binary that spawns with these
// Proc fields calls it from TestMain.
func Shim() {
	v, ok := os.LookupEnv(shimEnv)
	if !ok {
		return
	}
	os.Exit(runShim(v, os.Args))
}

// runShim sets the state spec gives, and the settings of the Proc in its
// environment (procShimEnv), and executes args[0] with argv args[1:]. It
// returns only on failure, with the exit status.
func runShim(spec string, args []string) int {
	f := strings.Split(spec, ",")
	var n [3]uint64
	var err error
	for i := 0; i < len(n) && err == nil; i++ {
		if len(f) != len(n) {
			err = fmt.Errorf("bad %s %q", shimEnv, spec)
			break
		}
		n[i], err = strconv.ParseUint(f[i], 16, 64)
	}
	if err == nil && len(args) < 2 {
		err = errors.New("no program")
	}
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, shimEnv+"=") {
			env = append(env, kv)
		}
	}
	var settings *procSpec
	if err == nil {
		settings, env, err = takeProcSpec(env)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "metad: signal shim: %v\n", err)
		return 126
	}
	report := os.NewFile(uintptr(n[2]), "shim-errors")
	syscall.CloseOnExec(int(n[2]))
	ppid := os.Getppid()
	runtime.LockOSThread() // exec from the thread whose mask, nice value and user are set
	// In this order: limits and nice value while the shim may still
	// raise them, then the user, then the mask, which must hold from the
	// exec on.
	step := stepSignals
	if settings != nil {
		step, err = applySettings(settings)
	}
	if err == nil {
		step, err = stepSignals, setIgnored(n[0])
	}
	if err == nil && settings != nil {
		step, err = becomeUser(settings, ppid)
	}
	if err == nil {
		step = stepSignals
		_, err = threadMask(&n[1])
	}
	if err == nil {
		step, err = stepExec, syscall.Exec(args[0], args[1:], env)
	}
	errno := errnoOf(err)
	var b [8]byte
	*(*uint32)(unsafe.Pointer(&b)) = uint32(errno)
	*(*uint32)(unsafe.Pointer(&b[4])) = uint32(step)
	report.Write(b[:])
	return StartCode(errno)
}

// forkExecState is syscall.ForkExec for a child that must start with the
// signal state want (nil: the defaults). On an error, a pid other than 0
// is a shim that failed, or was killed, and is left for the Reaper to
// reap: unlike ForkExec, this never waits for a child.
func forkExecState(path string, argv []string, attr *syscall.ProcAttr, want *SignalState) (int, error) {
	var s SignalState
	if want != nil {
		s = *want
	}
	if !inheritsIgnored(s.Ignored) || viaShim(attr) {
		return forkExecShim(path, argv, attr, s)
	}
	if s.Blocked == 0 && StartSignals().Blocked == 0 {
		// Every thread's mask is empty: metad was started with none
		// and blocks nothing itself but on threads of its own.
		return syscall.ForkExec(path, argv, attr)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old, err := threadMask(&s.Blocked)
	if err != nil {
		return 0, fmt.Errorf("cannot set signal mask: %w", err)
	}
	defer threadMask(&old)
	return syscall.ForkExec(path, argv, attr)
}

// forkExecShim starts the shim, which gives the program the state s.
func forkExecShim(path string, argv []string, attr *syscall.ProcAttr, s SignalState) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("cannot make the signal shim's pipe: %w", err)
	}
	defer r.Close()
	shim := *attr
	shim.Files = append(append([]uintptr(nil), attr.Files...), w.Fd())
	spec := fmt.Sprintf("%s=%x,%x,%x", shimEnv, s.Ignored, s.Blocked, len(attr.Files))
	shim.Env = append(append([]string(nil), attr.Env...), spec)
	pid, err := syscall.ForkExec(shimPath(), append([]string{path}, argv...), &shim)
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("cannot start the signal shim: %w", err)
	}
	r.SetReadDeadline(time.Now().Add(shimPatience))
	var b [8]byte // the errno, then the step that failed (see runShim)
	n, err := io.ReadFull(r, b[:])
	if n == 0 && errors.Is(err, io.EOF) {
		return pid, nil // the pipe closed on exec: the program runs
	}
	if n < len(b) {
		// Timed out, or a shim that died before it could report.
		unix.Kill(pid, unix.SIGKILL)
		return pid, fmt.Errorf("signal shim did not execute the program: %v", err)
	}
	errno := syscall.Errno(*(*uint32)(unsafe.Pointer(&b)))
	return pid, shimStepError(int(*(*uint32)(unsafe.Pointer(&b[4]))), errno)
}

// shimPath is the file the shim is started from: metad's own binary,
// through /proc/self/exe, or, where /proc is not mounted (a bare root
// filesystem, before process 1 has mounted it), the path metad was
// started as, when it names one.
func shimPath() string {
	const self = "/proc/self/exe"
	if _, err := os.Stat(self); err == nil {
		return self
	}
	if p := os.Args[0]; strings.Contains(p, "/") {
		return p
	}
	if p, err := exec.LookPath(os.Args[0]); err == nil {
		return p
	}
	return self // fails, and says which file
}

// inheritsIgnored reports whether a child forked now keeps every signal
// of set ignored without the shim: Go's fork child resets to the default
// only the signals the runtime handles, so one that is ignored in metad
// right now (one metad does not catch, such as 32 and 33, which the C
// libraries keep for themselves and which a runner may leave ignored)
// stays ignored across fork and exec.
func inheritsIgnored(set uint64) bool {
	for sig := syscall.Signal(1); sig <= maxSignal; sig++ {
		if has(set, sig) && !ignored(sig) {
			return false
		}
	}
	return true
}
