package initsys

import (
	"errors"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPolicy(t *testing.T) {
	const (
		I = Ignore
		S = Shutdown
		R = Reload
		F = Relay
	)
	// Every signal of Linux 1..31, the edges of the real-time ones, and
	// numbers out of range; {config, command}.
	tests := map[syscall.Signal][2]Action{
		0:                 {I, I},
		syscall.SIGHUP:    {R, F},
		syscall.SIGINT:    {S, F},
		syscall.SIGQUIT:   {I, F},
		syscall.SIGILL:    {I, I},
		syscall.SIGTRAP:   {I, I},
		syscall.SIGABRT:   {I, I},
		syscall.SIGBUS:    {I, I},
		syscall.SIGFPE:    {I, I},
		syscall.SIGKILL:   {I, I},
		syscall.SIGUSR1:   {I, F},
		syscall.SIGSEGV:   {I, I},
		syscall.SIGUSR2:   {I, F},
		syscall.SIGPIPE:   {I, I},
		syscall.SIGALRM:   {I, F},
		syscall.SIGTERM:   {S, F},
		syscall.SIGSTKFLT: {I, F},
		syscall.SIGCHLD:   {I, I},
		syscall.SIGCONT:   {I, F},
		syscall.SIGSTOP:   {I, I},
		syscall.SIGTSTP:   {I, F},
		syscall.SIGTTIN:   {I, I},
		syscall.SIGTTOU:   {I, I},
		syscall.SIGURG:    {I, I},
		syscall.SIGXCPU:   {I, F},
		syscall.SIGXFSZ:   {I, F},
		syscall.SIGVTALRM: {I, F},
		syscall.SIGPROF:   {I, I},
		syscall.SIGWINCH:  {I, F},
		syscall.SIGIO:     {I, F},
		syscall.SIGPWR:    {S, F},
		syscall.SIGSYS:    {I, I},
		32:                {I, I},
		33:                {I, I},
		34:                {I, I},
		35:                {I, F},
		50:                {I, F},
		64:                {I, F},
		65:                {I, I},
	}
	for sig := syscall.Signal(1); sig <= 31; sig++ {
		if _, ok := tests[sig]; !ok {
			t.Errorf("signal %d is missing from the table", sig)
		}
	}
	for sig, want := range tests {
		for m, mode := range []Mode{Config, Command} {
			if got := Policy(sig, mode); got != want[m] {
				t.Errorf("Policy(%d %v, %v): got %v, want %v", int(sig), sig, mode, got, want[m])
			}
		}
		if got := Policy(sig, Mode(7)); got != Ignore {
			t.Errorf("Policy(%d, mode 7): got %v, want %v", int(sig), got, Ignore)
		}
	}
}

func TestStrings(t *testing.T) {
	tests := []struct {
		got  interface{ String() string }
		want string
	}{
		{Ignore, "ignore"}, {Shutdown, "shutdown"}, {Reload, "reload"}, {Relay, "relay"}, {Action(9), "action(9)"},
		{Config, "config"}, {Command, "command"}, {Mode(9), "mode(9)"},
		{Poweroff, "poweroff"}, {Reboot, "reboot"}, {Halt, "halt"}, {Final(9), "final(9)"},
	}
	for _, tt := range tests {
		if got := tt.got.String(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

// TestNotify sends signals to a child that called Notify: each one comes
// out of the channel, and those the Go runtime would die of (a SIGSEGV or
// SIGABRT sent with kill) do not end it.
func TestNotify(t *testing.T) {
	c := spawn(t, helper("notify"))
	if got := c.line(t); got != "ready" {
		t.Fatalf("got %q, want %q", got, "ready")
	}
	for _, sig := range []syscall.Signal{
		syscall.SIGSEGV, syscall.SIGABRT, syscall.SIGILL, syscall.SIGPIPE, syscall.SIGUSR1,
		syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGWINCH, 40, syscall.SIGTERM,
	} {
		if err := Forward(c.pid, sig, false); err != nil {
			t.Fatal(err)
		}
		if got, want := c.line(t), strconv.Itoa(int(sig)); got != want {
			t.Fatalf("after %v: got %s, want %s", sig, got, want)
		}
	}
	if got := c.wait(t); got.Code() != 0 {
		t.Errorf("got %v, want exit status 0", got)
	}
}

func TestForward(t *testing.T) {
	p := helper("sleep")
	p.Setsid = true
	c := spawn(t, p)
	if got := c.line(t); got != "ready" {
		t.Fatalf("got %q, want %q", got, "ready")
	}
	if sid, err := unix.Getsid(c.pid); sid != c.pid || err != nil {
		t.Errorf("session: got %d (%v), want %d", sid, err, c.pid)
	}
	if pgid, err := syscall.Getpgid(c.pid); pgid != c.pid || err != nil {
		t.Errorf("process group: got %d (%v), want %d", pgid, err, c.pid)
	}
	if err := Forward(c.pid, syscall.SIGTERM, true); err != nil {
		t.Fatal(err)
	}
	if sig, _ := c.wait(t).Signaled(); sig != syscall.SIGTERM {
		t.Errorf("got %v, want %v", sig, syscall.SIGTERM)
	}
	for _, pid := range []int{0, -1} {
		for _, group := range []bool{false, true} {
			if err := Forward(pid, 0, group); !errors.Is(err, syscall.EINVAL) {
				t.Errorf("Forward(%d, 0, %v): got %v, want EINVAL", pid, group, err)
			}
		}
	}
}
