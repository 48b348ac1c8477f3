package conffmt

import (
	"syscall"
	"testing"
)

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		ok   bool
	}{
		{"TERM", syscall.SIGTERM, true},
		{"SIGTERM", syscall.SIGTERM, true},
		{"term", syscall.SIGTERM, true},
		{"SigKill", syscall.SIGKILL, true},
		{"STOP", syscall.SIGSTOP, true},
		{"1", syscall.SIGHUP, true},
		{"64", syscall.Signal(64), true},
		{"0", 0, false},
		{"65", 0, false},
		{"-9", 0, false},
		{"", 0, false},
		{"SIG", 0, false},
		{"BOGUS", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSignal(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseSignal(%q): got %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
