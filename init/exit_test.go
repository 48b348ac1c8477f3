package initsys

import (
	"fmt"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestExit(t *testing.T) {
	tests := []struct {
		status unix.WaitStatus // as wait4 encodes it
		code   int
		sig    syscall.Signal
		str    string
	}{
		{0, 0, 0, "exit status 0"},
		{3 << 8, 3, 0, "exit status 3"},
		{255 << 8, 255, 0, "exit status 255"},
		{9, 137, syscall.SIGKILL, "signal 9 (killed)"},
		{15, 143, syscall.SIGTERM, "signal 15 (terminated)"},
		{11 | 0x80, 139, syscall.SIGSEGV, "signal 11 (segmentation fault, core dumped)"},
		{40, 168, 40, "signal 40"},
		{40 | 0x80, 168, 40, "signal 40 (core dumped)"},
		{19<<8 | 0x7f, -1, 0, "wait status 0x137f"}, // stopped: never reported
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%#x", uint32(tt.status)), func(t *testing.T) {
			e := Exit{Status: tt.status}
			if got := e.Code(); got != tt.code {
				t.Errorf("Code(): got %d, want %d", got, tt.code)
			}
			sig, ok := e.Signaled()
			if sig != tt.sig || ok != (tt.sig != 0) {
				t.Errorf("Signaled(): got %v, %v, want %v, %v", sig, ok, tt.sig, tt.sig != 0)
			}
			if got := e.String(); got != tt.str {
				t.Errorf("String(): got %q, want %q", got, tt.str)
			}
		})
	}
}

func TestStartCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{fmt.Errorf("cannot start %q: %w", "/x", syscall.ENOENT), 127},
		{fmt.Errorf("cannot start %q: %w", "/x/y", syscall.ENOTDIR), 127},
		{fmt.Errorf("cannot start %q: %w", "/x", syscall.EACCES), 126},
		{fmt.Errorf("cannot start %q: %w", "/x", syscall.ENOEXEC), 126},
	}
	for _, tt := range tests {
		if got := StartCode(tt.err); got != tt.want {
			t.Errorf("StartCode(%v): got %d, want %d", tt.err, got, tt.want)
		}
	}
}
