package supervise

import (
	"testing"

	"metad/conffmt"
)

func TestVerdictOf(t *testing.T) {
	svc := func(class conffmt.Class, r conffmt.Restart, retries int) *conffmt.Service {
		return &conffmt.Service{Class: class, Restart: r, Retries: retries}
	}
	tests := []struct {
		name    string
		svc     *conffmt.Service
		crashes int
		failed  bool
		want    endKind
	}{
		{"always, clean", svc(conffmt.Daemon, conffmt.RestartAlways, 0), 0, false, endNone},
		{"always, crash, no retries", svc(conffmt.Daemon, conffmt.RestartAlways, 0), 50, true, endNone},
		{"always, under retries", svc(conffmt.Daemon, conffmt.RestartAlways, 3), 2, true, endNone},
		{"always, retries used up", svc(conffmt.Daemon, conffmt.RestartAlways, 3), 3, true, endFailed},
		{"on-failure, clean", svc(conffmt.Daemon, conffmt.RestartOnFailure, 0), 0, false, endDone},
		{"on-failure, failed", svc(conffmt.Daemon, conffmt.RestartOnFailure, 0), 1, true, endNone},
		{"on-failure, retries used up", svc(conffmt.Daemon, conffmt.RestartOnFailure, 2), 2, true, endFailed},
		{"never, clean", svc(conffmt.Daemon, conffmt.RestartNever, 0), 0, false, endDone},
		{"never, failed after a long run", svc(conffmt.Daemon, conffmt.RestartNever, 0), 0, true, endFailed},
		{"never, clean after crashes", svc(conffmt.Daemon, conffmt.RestartNever, 1), 0, false, endDone},
		{"listener ignores restart", svc(conffmt.Listener, conffmt.RestartNever, 0), 0, false, endNone},
		{"listener, retries used up", svc(conffmt.Listener, conffmt.RestartAlways, 2), 2, true, endFailed},
		{"stream, retries used up", svc(conffmt.Stream, conffmt.RestartAlways, 1), 1, true, endFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := verdictOf(tt.svc, tt.crashes, tt.failed, "exit status 3", 3)
			if got.kind != tt.want {
				t.Errorf("got %v (%q), want %v", got.kind, got.reason, tt.want)
			}
			if got.kind != endNone && got.code != 3 {
				t.Errorf("got code %d, want 3", got.code)
			}
		})
	}
}
