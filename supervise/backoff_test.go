package supervise

import (
	"syscall"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	tests := []struct {
		k       int
		ceiling time.Duration
		want    time.Duration
	}{
		{0, 5 * time.Minute, 0},
		{-1, 5 * time.Minute, 0},
		{1, 5 * time.Minute, time.Second},
		{2, 5 * time.Minute, 2 * time.Second},
		{3, 5 * time.Minute, 4 * time.Second},
		{9, 5 * time.Minute, 256 * time.Second},
		{10, 5 * time.Minute, 5 * time.Minute},
		{1000, 5 * time.Minute, 5 * time.Minute},
		{1 << 30, time.Hour, time.Hour},
		{1, 500 * time.Millisecond, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := Delay(tt.k, tt.ceiling); got != tt.want {
			t.Errorf("Delay(%d, %v) = %v, want %v", tt.k, tt.ceiling, got, tt.want)
		}
	}
}

func TestClassify(t *testing.T) {
	const window = 10 * time.Second
	tests := []struct {
		name  string
		ran   time.Duration
		code  int
		sig   syscall.Signal
		asked bool
		want  Outcome
	}{
		{"clean exit, short", time.Millisecond, 0, 0, false, Clean},
		{"clean exit, long", time.Hour, 0, 0, false, Clean},
		{"exit 1, short", time.Second, 1, 0, false, Crashed},
		{"exit 1 just inside the window", window - time.Nanosecond, 1, 0, false, Crashed},
		{"exit 1 at the window", window, 1, 0, false, Failed},
		{"exit 1, long", time.Hour, 1, 0, false, Failed},
		{"killed, short", time.Second, -1, syscall.SIGKILL, false, Crashed},
		{"segv, long", time.Hour, -1, syscall.SIGSEGV, false, Failed},
		{"asked, died of it", time.Second, -1, syscall.SIGTERM, true, Clean},
		{"asked, exit 1", time.Second, 1, 0, true, Clean},
	}
	for _, tt := range tests {
		if got := Classify(tt.ran, window, tt.code, tt.sig, tt.asked); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNextCrashes(t *testing.T) {
	tests := []struct {
		k    int
		o    Outcome
		want int
	}{
		{0, Crashed, 1},
		{4, Crashed, 5},
		{4, Failed, 0},
		{4, Clean, 0},
	}
	for _, tt := range tests {
		if got := NextCrashes(tt.k, tt.o); got != tt.want {
			t.Errorf("NextCrashes(%d, %v) = %d, want %d", tt.k, tt.o, got, tt.want)
		}
	}
}
