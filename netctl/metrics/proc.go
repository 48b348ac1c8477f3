package metrics

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of the times in /proc/PID/stat. The kernel shows
// them in USER_HZ, which is 100 on every architecture Linux runs on.
const userHZ = 100

// readProcess reads metad's own figures from proc (a procfs mount, as
// /proc). A figure that cannot be read is left negative, or zero for the
// start time: a metad with no /proc mounted still serves its services'
// metrics.
func readProcess(proc string) Process {
	p := Process{Goroutines: runtime.NumGoroutine(), CPUSeconds: -1, RSSBytes: -1, OpenFDs: -1, MaxFDs: -1}
	if st, err := readStat(filepath.Join(proc, "self/stat")); err == nil {
		p.CPUSeconds = float64(st.utime+st.stime) / userHZ
		p.RSSBytes = st.rss * int64(os.Getpagesize())
		if boot, err := bootTime(filepath.Join(proc, "stat")); err == nil {
			p.StartTime = boot.Add(time.Duration(st.start) * time.Second / userHZ)
		}
	}
	if fds, err := os.ReadDir(filepath.Join(proc, "self/fd")); err == nil {
		p.OpenFDs = len(fds)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur <= 1<<53 {
		p.MaxFDs = int(lim.Cur)
	}
	return p
}

// stat is what metad reads of /proc/PID/stat.
type stat struct {
	utime, stime, start int64 // in USER_HZ ticks; start since boot
	rss                 int64 // in pages
}

// readStat reads /proc/PID/stat (proc(5)). The command name, in
// parentheses, may hold spaces and parentheses: fields are counted from
// the last ')'.
func readStat(path string) (stat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return stat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("cannot read %s: no command name", path)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3, state
	const utime, stime, start, rss = 14 - 3, 15 - 3, 22 - 3, 24 - 3
	if len(f) <= rss {
		return stat{}, fmt.Errorf("cannot read %s: %d fields", path, len(f)+2)
	}
	var st stat
	for _, v := range []struct {
		to    *int64
		field int
	}{{&st.utime, utime}, {&st.stime, stime}, {&st.start, start}, {&st.rss, rss}} {
		if *v.to, err = strconv.ParseInt(f[v.field], 10, 64); err != nil {
			return stat{}, fmt.Errorf("cannot read %s: field %d: %w", path, v.field+3, err)
		}
	}
	return st, nil
}

// bootTime reads the boot time from /proc/stat's btime line.
func bootTime(path string) (time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("cannot read %s: btime: %w", path, err)
			}
			return time.Unix(sec, 0), nil
		}
	}
	if err := sc.Err(); err != nil {
		return time.Time{}, fmt.Errorf("cannot read %s: %w", path, err)
	}
	return time.Time{}, fmt.Errorf("cannot read %s: no btime line", path)
}
