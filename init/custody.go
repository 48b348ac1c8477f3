package initsys

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// ProcStat is what custody needs of one line of /proc/PID/stat.
type ProcStat struct {
	PID     int
	State   byte // R, S, D, Z, T...
	PPID    int
	PGRP    int // process group
	Session int // session id: the pid of the session leader
}

// ParseStat parses the text of /proc/PID/stat. The command name, in
// parentheses, may hold spaces and parentheses itself: the fields that
// follow start after the last ')'. It never panics, whatever b holds.
func ParseStat(b []byte) (ProcStat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open <= 0 || end < open {
		return ProcStat{}, errors.New("cannot parse process status: no command name")
	}
	var st ProcStat
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return ProcStat{}, fmt.Errorf("cannot parse process status: pid: %w", err)
	}
	st.PID = pid
	f := bytes.Fields(b[end+1:])
	if len(f) < 4 || len(f[0]) != 1 {
		return ProcStat{}, errors.New("cannot parse process status: too few fields")
	}
	st.State = f[0][0]
	nums := [3]*int{&st.PPID, &st.PGRP, &st.Session}
	for i, p := range nums {
		if *p, err = strconv.Atoi(string(f[1+i])); err != nil {
			return ProcStat{}, fmt.Errorf("cannot parse process status: field %d: %w", 4+i, err)
		}
	}
	return st, nil
}

// Sessions lists the live processes whose session or process group is
// one of ids, from /proc (dir is "/proc" but for tests), as a map from
// that id to their pids, in no particular order. Zombies are left out:
// they have ended, and whoever reaps them is told. A process that ends
// during the scan is skipped. Sessions does not signal or wait for
// anything; it is safe for concurrent use.
//
// A process that called setsid(2) in a new session is not found: only a
// cgroup follows those.
func Sessions(dir string, ids []int) (map[int][]int, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot list processes: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("cannot list processes: %w", err)
	}
	want := make(map[int]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	out := make(map[int][]int)
	buf := make([]byte, 512)
	for _, name := range names {
		if name[0] < '1' || name[0] > '9' {
			continue
		}
		st, ok := readStat(dir+"/"+name+"/stat", buf)
		if !ok || st.State == 'Z' || st.State == 'X' {
			continue
		}
		switch {
		case want[st.Session]:
			out[st.Session] = append(out[st.Session], st.PID)
		case want[st.PGRP]:
			out[st.PGRP] = append(out[st.PGRP], st.PID)
		}
	}
	return out, nil
}

// readStat reads and parses one stat file into buf; ok is false when the
// process is gone or the file unreadable.
func readStat(path string, buf []byte) (ProcStat, bool) {
	f, err := os.Open(path)
	if err != nil {
		return ProcStat{}, false
	}
	n, err := f.Read(buf)
	f.Close()
	if err != nil || n == 0 {
		return ProcStat{}, false
	}
	st, err := ParseStat(buf[:n])
	return st, err == nil
}
