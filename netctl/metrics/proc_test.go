package metrics

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeProc writes a procfs with the given self/stat text, a /proc/stat
// with btime, and n entries in self/fd.
func fakeProc(t *testing.T, stat, procStat string, fds int) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "self/fd"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range fds {
		os.WriteFile(filepath.Join(dir, "self/fd", string(rune('0'+i))), nil, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "self/stat"), []byte(stat), 0o644)
	os.WriteFile(filepath.Join(dir, "stat"), []byte(procStat), 0o644)
	return dir
}

// A command name with spaces and parentheses, as a process may set.
const statLine = "4242 (me) (x y) S 1 4242 4242 0 -1 4194560 500 0 0 0 " +
	"150 25 0 0 20 0 9 0 12345 734003200 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"

func TestReadProcess(t *testing.T) {
	proc := fakeProc(t, statLine, "cpu  1 2 3\nbtime 1764500000\nprocesses 9\n", 3)
	p := readProcess(proc)
	if p.CPUSeconds != 1.75 {
		t.Errorf("cpu: got %v, want 1.75 (175 ticks)", p.CPUSeconds)
	}
	if want := int64(2048 * os.Getpagesize()); p.RSSBytes != want {
		t.Errorf("rss: got %d, want %d", p.RSSBytes, want)
	}
	if want := time.Unix(1764500000, 0).Add(123450 * time.Millisecond); !p.StartTime.Equal(want) {
		t.Errorf("start: got %v, want %v", p.StartTime, want)
	}
	if p.OpenFDs != 3 {
		t.Errorf("open fds: got %d, want 3", p.OpenFDs)
	}
	if p.MaxFDs <= 0 || p.Goroutines <= 0 {
		t.Errorf("max fds %d, goroutines %d: want both positive", p.MaxFDs, p.Goroutines)
	}
}

func TestReadProcessWithoutProc(t *testing.T) {
	p := readProcess(filepath.Join(t.TempDir(), "none"))
	if p.CPUSeconds >= 0 || p.RSSBytes >= 0 || p.OpenFDs >= 0 || !p.StartTime.IsZero() {
		t.Errorf("got %+v, want the figures of /proc unknown", p)
	}
}

func TestReadProcessBadFiles(t *testing.T) {
	for name, tc := range map[string]struct{ stat, procStat string }{
		"no name":      {"4242 me S 1", "btime 1\n"},
		"short":        {"4242 (me) S 1 2 3\n", "btime 1\n"},
		"not a number": {"4242 (me) S 1 4242 4242 0 -1 4194560 500 0 0 0 x 25 0 0 20 0 9 0 12345 734003200 2048 1\n", "btime 1\n"},
	} {
		p := readProcess(fakeProc(t, tc.stat, tc.procStat, 1))
		if p.CPUSeconds >= 0 || p.RSSBytes >= 0 || !p.StartTime.IsZero() {
			t.Errorf("%s: got %+v, want the figures of stat unknown", name, p)
		}
	}
	p := readProcess(fakeProc(t, statLine, "cpu 1 2 3\n", 1))
	if !p.StartTime.IsZero() || p.CPUSeconds != 1.75 {
		t.Errorf("no btime: got start %v, cpu %v; want no start, cpu 1.75", p.StartTime, p.CPUSeconds)
	}
}
