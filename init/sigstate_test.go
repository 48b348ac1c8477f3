package initsys

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
)

// set returns the signal set of sigs.
func set(sigs ...syscall.Signal) uint64 {
	var s uint64
	for _, sig := range sigs {
		s |= 1 << (sig - 1)
	}
	return s
}

// What survives the Go runtime's start for StartSignals to see without
// startEntry: the ignored signals it leaves alone, and the blocked signals
// it lets its threads block.
var (
	visibleIgnored = set(syscall.SIGHUP, syscall.SIGINT, syscall.SIGCONT, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, 32, 34)
	visibleBlocked = set(syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGCONT,
		syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGXCPU, syscall.SIGXFSZ, syscall.SIGVTALRM,
		syscall.SIGWINCH, syscall.SIGIO, syscall.SIGPWR) | ^uint64(0)&^(1<<34-1) // and 35 to 64
)

// TestSignalStates starts a metad-like process (the helper
// signal-states) with signals ignored and blocked, as tini's own test
// does: the command it starts gets that state (as much of it as the Go
// runtime let it see), a service the defaults. The helper is started
// through the shim, which is how it gets that state in the first place.
func TestSignalStates(t *testing.T) {
	want := SignalState{
		// SIGQUIT, SIGSEGV and SIGUSR2 the runtime takes over.
		Ignored: set(syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGSEGV, syscall.SIGTTOU, syscall.SIGUSR2),
		// SIGTERM and SIGILL the runtime unblocks.
		Blocked: set(syscall.SIGUSR1, syscall.SIGTTIN, syscall.SIGTERM, syscall.SIGILL),
	}
	p := helper("signal-states")
	p.Signals = &want
	c := spawn(t, p)
	line := c.line(t)
	t.Log(line)
	f := strings.Fields(line)
	if e := c.wait(t); e.Code() != 0 || len(f) != 4 {
		t.Fatalf("got %v: %q, want exit status 0 and 4 fields", e, f)
	}
	seen := want
	if f[0] != "true" { // no startEntry: go test links the runtime's own
		seen = SignalState{Ignored: want.Ignored & visibleIgnored, Blocked: want.Blocked & visibleBlocked}
	}
	wantStart := fmt.Sprintf("%x,%x", seen.Ignored, seen.Blocked)
	if f[1] != wantStart {
		t.Errorf("start: got %s, want %s (%v)", f[1], wantStart, seen)
	}
	if f[2] != wantStart {
		t.Errorf("command: got %s, want %s (%v)", f[2], wantStart, seen)
	}
	if f[3] != "0,0" {
		t.Errorf("service: got %s, want 0,0", f[3])
	}
}

// TestShimExecError: a program the shim cannot execute fails Spawn as it
// would without the shim, with the errno and no exit to deliver.
func TestShimExecError(t *testing.T) {
	for path, want := range map[string]syscall.Errno{"/nonexistent": syscall.ENOENT, "/etc/passwd": syscall.EACCES} {
		p := &Proc{Path: path, Argv: []string{"x"}, Files: []int{0, 1, 2}, Signals: &SignalState{Ignored: set(syscall.SIGHUP)}}
		called := make(chan Exit, 1)
		_, err := reaper.Spawn(p, func(e Exit) { called <- e })
		if got, ok := err.(interface{ Unwrap() error }); !ok || !strings.Contains(err.Error(), path) || !isErrno(got.Unwrap(), want) {
			t.Errorf("%s: got %v, want %v", path, err, want)
		}
		if StartCode(err) != StartCode(want) {
			t.Errorf("%s: StartCode got %d, want %d", path, StartCode(err), StartCode(want))
		}
		select {
		case e := <-called:
			t.Errorf("%s: got an exit %v, want none", path, e)
		default:
		}
	}
}

func isErrno(err error, want syscall.Errno) bool {
	e, ok := err.(syscall.Errno)
	return ok && e == want
}

// BenchmarkSpawnSignals measures starting /bin/true and reaping it with a
// signal state of its own: a mask (set on the forking thread) and an
// ignored signal (through the shim). BenchmarkSpawn is the default.
func BenchmarkSpawnSignals(b *testing.B) {
	for name, s := range map[string]SignalState{
		"mask":   {Blocked: set(syscall.SIGUSR1)},
		"ignore": {Ignored: set(syscall.SIGHUP)},
	} {
		b.Run(name, func(b *testing.B) {
			benchSpawn(b, &Proc{Path: "/bin/true", Argv: []string{"true"}, Files: []int{0, 1, 2}, Setsid: true, Signals: &s})
		})
	}
}
