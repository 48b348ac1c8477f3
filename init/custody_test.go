package initsys

import (
	"slices"
	"strconv"
	"syscall"
	"testing"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		in   string
		want ProcStat
		ok   bool
	}{
		{"812 (nginx) S 1 812 812 0 -1 4194624 0", ProcStat{PID: 812, State: 'S', PPID: 1, PGRP: 812, Session: 812}, true},
		{"77 (a b) c)) R 9 70 60 34816", ProcStat{PID: 77, State: 'R', PPID: 9, PGRP: 70, Session: 60}, true},
		{"5 (sleep) Z 1 4 4", ProcStat{PID: 5, State: 'Z', PPID: 1, PGRP: 4, Session: 4}, true},
		{"5 (sleep) S 1 4", ProcStat{}, false},
		{"x (sleep) S 1 4 4", ProcStat{}, false},
		{"5 sleep S 1 4 4", ProcStat{}, false},
		{"(x) S 1 2 3", ProcStat{}, false},
		{"5 (x) SS 1 2 3", ProcStat{}, false},
		{"5 (x) S 1 two 3", ProcStat{}, false},
		{"", ProcStat{}, false},
	}
	for _, tt := range tests {
		got, err := ParseStat([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseStat(%q) = %+v, %v; want %+v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("812 (nginx) S 1 812 812 0 -1"))
	f.Add([]byte("1 ()) ) R 0 0 0"))
	f.Fuzz(func(t *testing.T, b []byte) { ParseStat(b) })
}

// TestSessionsFindsLeftovers starts a session leader that leaves a child
// behind when it exits, and finds that child in the leader's session.
func TestSessionsFindsLeftovers(t *testing.T) {
	p := &Proc{Path: "/bin/sh", Argv: []string{"sh", "-c", "sleep 60 & echo $!"}, Files: []int{0, 1, 2}, Setsid: true}
	c := spawn(t, p)
	left, err := strconv.Atoi(c.line(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(left, syscall.SIGKILL) })
	c.wait(t) // the leader is gone; its child was forked before it printed
	got, err := Sessions("/proc", []int{c.pid})
	if err != nil {
		t.Fatal(err)
	}
	if pids := got[c.pid]; !slices.Equal(pids, []int{left}) {
		t.Errorf("got session members %v, want [%d]", pids, left)
	}
	if got, err := Sessions("/proc", []int{1 << 30}); err != nil || len(got) != 0 {
		t.Errorf("unused session: got %v, %v, want nothing", got, err)
	}
	if got, _ := Sessions("/proc", nil); got != nil {
		t.Errorf("no session asked: got %v", got)
	}
}
