package initsys

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Action is what metad does with a signal it receives.
type Action uint8

// The actions of Policy. The zero value is Ignore.
const (
	Ignore   Action = iota // drop it
	Shutdown               // stop every service and exit (or power off)
	Reload                 // re-read the config file
	Relay                  // forward it to the command (command mode); see Forward
)

// String returns the action's name in lower case.
func (a Action) String() string {
	switch a {
	case Ignore:
		return "ignore"
	case Shutdown:
		return "shutdown"
	case Reload:
		return "reload"
	case Relay:
		return "relay"
	default:
		return "action(" + strconv.Itoa(int(a)) + ")"
	}
}

// Mode is how metad runs, which decides its signal policy.
type Mode uint8

// The modes of metad. The zero value is Config.
const (
	Config  Mode = iota // services from the config file only
	Command             // metad -- COMMAND: the command is the main process
)

// String returns the mode's name in lower case.
func (m Mode) String() string {
	switch m {
	case Config:
		return "config"
	case Command:
		return "command"
	default:
		return "mode(" + strconv.Itoa(int(m)) + ")"
	}
}

// maxSignal is the highest signal number on Linux (SIGRTMAX).
const maxSignal = 64

// Policy returns what metad does with sig in mode m. It is a pure function.
//
// In Config mode SIGTERM, SIGINT and SIGPWR shut down (SIGPWR is what
// lxc-stop and UPS daemons send to init; SIGINT is Ctrl-Alt-Del), SIGHUP
// reloads, and everything else is ignored: metad must not die of a stray
// signal, so SIGQUIT dumps no goroutines and SIGUSR1 and the rest do
// nothing.
//
// In Command mode every signal Notify delivers is relayed to the command
// (Relay), whose exit then ends metad, except:
//   - SIGPIPE: metad cannot tell one sent with kill from the one the kernel
//     raises when metad itself writes to a closed socket or pipe (a metac
//     client that went away), and forwarding that one would kill the
//     command for metad's own broken pipe.
//   - SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS and SIGABRT: Notify
//     delivers them only when they were sent with kill; they say nothing
//     to the command.
//
// Signals that Notify does not deliver (SIGCHLD, SIGURG, SIGPROF, SIGTTIN,
// SIGTTOU, SIGKILL, SIGSTOP, 32 to 34) are Ignore in both modes.
func Policy(sig syscall.Signal, m Mode) Action {
	if !caught(sig) || sig == syscall.SIGPIPE || fault(sig) {
		return Ignore
	}
	switch m {
	case Config:
		switch sig {
		case syscall.SIGTERM, syscall.SIGINT, syscall.SIGPWR:
			return Shutdown
		case syscall.SIGHUP:
			return Reload
		default:
			return Ignore
		}
	case Command:
		return Relay
	default:
		return Ignore
	}
}

// caught reports whether Notify delivers sig (whatever the start-up state).
func caught(sig syscall.Signal) bool {
	switch sig {
	case syscall.SIGKILL, syscall.SIGSTOP:
		return false // cannot be caught
	case syscall.SIGCHLD:
		return false // the Reaper waits with waitid(2); Go drops the signal
	case syscall.SIGURG, syscall.SIGPROF:
		return false // the Go runtime's: preemption, profiling
	case syscall.SIGTTIN, syscall.SIGTTOU:
		return false // see Notify
	}
	if sig >= 32 && sig <= 34 {
		return false // the C libraries' and the Go runtime's; os/signal cannot catch them
	}
	return sig >= 1 && sig <= maxSignal
}

// fault reports whether sig is one the kernel raises for a faulting
// instruction (or abort(3) raises).
func fault(sig syscall.Signal) bool {
	switch sig {
	case syscall.SIGSEGV, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGILL,
		syscall.SIGTRAP, syscall.SIGSYS, syscall.SIGABRT:
		return true
	default:
		return false
	}
}

// Notify delivers to ch every signal that metad handles, to be dispatched
// with Policy. Call it at start-up, before the first child starts: until
// then SIGTERM, SIGINT and SIGHUP take Go's default action and end metad,
// orphaning the children. Afterwards only SIGKILL and signals 32 and 34,
// which Go leaves at their default, can end metad (and as PID 1 not even
// those, but SIGKILL from outside its PID namespace). ch should be
// buffered; a signal that finds it full is dropped.
//
// Delivered: every signal from 1 to 64 except
//   - SIGCHLD: the Reaper waits for children with waitid(2), and the Go
//     runtime drops the signal while nobody wants it;
//   - SIGURG and SIGPROF, which the Go runtime keeps for preemption and
//     profiling, and signals 32 to 34, which the C libraries and the Go
//     runtime keep for their threads and os/signal cannot catch;
//   - SIGKILL and SIGSTOP, which nothing can catch;
//   - SIGTTIN and SIGTTOU, which keep their default action, stop, as for
//     any background job. A handler would be worse: when metad, in the
//     background of a terminal set to tostop, writes a log line there, the
//     kernel restarts the write after each SIGTTOU, forever. If metad was
//     started with them ignored, they are delivered after all (and dropped),
//     because that is the only way for Go to give children the default
//     disposition back.
//
// SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS and SIGABRT are
// delivered too, but only when another process sent them: a real fault
// still crashes metad as the Go runtime sees fit. Catching them means that
// "kill -SEGV 1" cannot bring down a machine or a container.
func Notify(ch chan<- os.Signal) {
	StartSignals() // before Notify changes it
	var sigs []os.Signal
	for sig := syscall.Signal(1); sig <= maxSignal; sig++ {
		switch {
		case caught(sig):
		case (sig == syscall.SIGTTIN || sig == syscall.SIGTTOU) && ignored(sig):
		default:
			continue
		}
		sigs = append(sigs, sig)
	}
	signal.Notify(ch, sigs...)
}

// ignored reports whether sig is ignored (SIG_IGN) right now. Before
// Notify, that is how metad was started.
func ignored(sig syscall.Signal) bool {
	h, ok := handler(sig)
	return ok && h == sigIgn
}

// handler returns the handler of sig as rt_sigaction(2) reports it.
func handler(sig syscall.Signal) (uint64, bool) {
	// The kernel's struct sigaction starts with the handler on every
	// architecture; 32 bytes hold the whole of it on each.
	var old [4]uint64
	_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0)
	return old[0], errno == 0
}

// Forward sends sig to the process pid, or with group to its process group
// (-pid; metad's children lead their own groups).
func Forward(pid int, sig syscall.Signal, group bool) error {
	what, target := "process", pid
	if group {
		what, target = "process group", -pid
	}
	if pid <= 0 { // kill(0) and kill(-1) mean other things entirely
		return fmt.Errorf("cannot signal %s %d: %w", what, pid, syscall.EINVAL)
	}
	if err := syscall.Kill(target, sig); err != nil {
		return fmt.Errorf("cannot signal %s %d: %w", what, pid, err)
	}
	return nil
}

// sigIgn is SIG_IGN, as rt_sigaction(2) reports a handler.
const sigIgn = 1

// DefaultReserved gives signals 32 to 34 their default action back when
// metad was started with them ignored (GNU make, for one, starts its
// commands so). The Go runtime leaves these signals alone, so an ignored
// one would stay ignored in every child, against the promise of default
// dispositions. Go itself does not use them in a static binary, and a
// default action is what a fresh process has anyway. NewReaper calls it.
func DefaultReserved() {
	StartSignals() // before this changes it
	for sig := syscall.Signal(32); sig <= 34; sig++ {
		if !ignored(sig) {
			continue
		}
		// 32 zero bytes are SIG_DFL with no flags and an empty mask,
		// whatever the layout of struct sigaction after the handler.
		var dfl [4]uint64
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
	}
}
