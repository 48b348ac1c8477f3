package netctl

import (
	"errors"
	"testing"
	"time"
)

func TestFresh(t *testing.T) {
	now := testTime
	tests := []struct {
		name string
		t    time.Time
		want bool
	}{
		{"now", now, true},
		{"Skew ago", now.Add(-Skew), true},
		{"Skew ahead", now.Add(Skew), true},
		{"just over Skew ago", now.Add(-Skew - time.Nanosecond), false},
		{"just over Skew ahead", now.Add(Skew + time.Nanosecond), false},
		{"an hour ago", now.Add(-time.Hour), false},
		{"the zero time", time.Time{}, false},
		{"the epoch", time.Unix(0, 0), false},
	}
	for _, tt := range tests {
		if got := fresh(tt.t, now); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// key returns a distinct 16-byte key for n.
func key(n int) [16]byte {
	var k [16]byte
	k[0], k[1], k[2] = byte(n), byte(n>>8), byte(n>>16)
	return k
}

func TestSeen(t *testing.T) {
	type step struct {
		key  int
		at   time.Duration // after testTime
		want bool
		err  error
	}
	tests := []struct {
		name  string
		max   int
		steps []step
	}{
		{"new keys are added", 4, []step{{1, 0, true, nil}, {2, 0, true, nil}}},
		{"a key seen is refused", 4, []step{{1, 0, true, nil}, {1, time.Second, false, nil}}},
		{"a key is remembered until its time is over", 4, []step{
			{1, 0, true, nil}, {1, seenFor - time.Nanosecond, false, nil}, {1, seenFor, true, nil}}},
		{"a full memory refuses new keys", 2, []step{
			{1, 0, true, nil}, {2, 0, true, nil}, {3, time.Second, false, errSeenFull}, {1, time.Second, false, nil}}},
		{"a full memory takes keys again once old ones expire", 2, []step{
			{1, 0, true, nil}, {2, time.Second, true, nil}, {3, seenFor, true, nil}, {2, seenFor, false, nil},
			{1, seenFor, false, errSeenFull}, {1, seenFor + time.Second, true, nil}}},
	}
	for _, tt := range tests {
		s := newSeen(seenFor, tt.max)
		for i, st := range tt.steps {
			got, err := s.add(key(st.key), testTime.Add(st.at))
			if got != st.want || !errors.Is(err, st.err) {
				t.Errorf("%s: step %d: add(%d) at +%v: got %v, %v; want %v, %v", tt.name, i, st.key, st.at, got, err, st.want, st.err)
			}
		}
	}
}

func TestSeenStaysBounded(t *testing.T) {
	s := newSeen(time.Second, 100)
	now := testTime
	for i := range 100000 {
		now = now.Add(20 * time.Millisecond) // 50 a second: at most 50 live
		if ok, err := s.add(key(i), now); !ok || err != nil {
			t.Fatalf("add %d: got %v, %v; want true, nil", i, ok, err)
		}
		if s.len() > 51 || len(s.fifo) > 2*51+1 {
			t.Fatalf("after %d adds: got %d keys and a queue of %d, want at most 51 keys", i, s.len(), len(s.fifo))
		}
	}
}

func TestLimiter(t *testing.T) {
	type step struct {
		at         time.Duration
		want       bool
		suppressed int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a burst passes", []step{{0, true, 0}, {0, true, 0}, {0, true, 0}}},
		{"then events are suppressed", []step{{0, true, 0}, {0, true, 0}, {0, true, 0}, {0, false, 0}, {0, false, 0}}},
		{"one passes per interval and counts the suppressed", []step{
			{0, true, 0}, {0, true, 0}, {0, true, 0}, {0, false, 0}, {0, false, 0},
			{time.Second, true, 2}, {time.Second, false, 0}, {2 * time.Second, true, 1}}},
		{"a quiet while refills the burst", []step{
			{0, true, 0}, {0, true, 0}, {0, true, 0}, {time.Hour, true, 0}, {time.Hour, true, 0}, {time.Hour, true, 0}, {time.Hour, false, 0}}},
	}
	for _, tt := range tests {
		l := newLimiter(time.Second, 3)
		for i, st := range tt.steps {
			got, n := l.allow(testTime.Add(st.at))
			if got != st.want || n != st.suppressed {
				t.Errorf("%s: step %d at +%v: got %v, %d; want %v, %d", tt.name, i, st.at, got, n, st.want, st.suppressed)
			}
		}
	}
}
