package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A subject is a program under test, running in a PID namespace of its own
// under the nsinit helper (or, for inits, as PID 1 of it). Killing the
// namespace's first process makes the kernel kill everything in it, so no
// supervisor, service or orphan can outlive its measurement, and
// Pdeathsig ends the namespace if the bench itself dies.
type subject struct {
	name string
	cmd  *exec.Cmd
	log  string // file with the subject's stdout and stderr
	b    *bench
}

// start runs argv in a new PID namespace under nsinit. Its output goes to
// a log file in the bench's directory.
func (b *bench) start(name string, argv []string, env []string) (*subject, error) {
	return b.startWith(name, append([]string{b.self, helperFlag, "nsinit"}, argv...), env)
}

// startInit runs argv as PID 1 of a new PID namespace: for the init
// benchmarks, where being PID 1 is the point.
func (b *bench) startInit(name string, argv []string, env []string) (*subject, error) {
	return b.startWith(name, argv, env)
}

func (b *bench) startWith(name string, argv []string, env []string) (*subject, error) {
	logPath := filepath.Join(b.dir, "log", name+".log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID,
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	s := &subject{name: name, cmd: cmd, log: logPath, b: b}
	b.track(s, true)
	return s, nil
}

// stop kills the subject's namespace and waits for its first process.
func (s *subject) stop() {
	if s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.b.track(s, false)
}

// pid is the root-namespace pid of the namespace's first process.
func (s *subject) pid() int { return s.cmd.Process.Pid }

// tail returns the end of the subject's log, for error messages.
func (s *subject) tail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return strings.TrimSpace(string(b))
}

// main returns the pid of the program nsinit started: the supervisor.
func (s *subject) main() (int, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if kids := children(s.pid()); len(kids) > 0 {
			return kids[0], nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("cannot find the process of %s: %s", s.name, s.tail())
		}
		time.Sleep(time.Millisecond)
	}
}

// live holds every subject started and not yet stopped, so that an
// interrupted bench can kill them.
type live struct {
	mu   sync.Mutex
	subj map[*subject]struct{}
}

func (b *bench) track(s *subject, on bool) {
	b.live.mu.Lock()
	defer b.live.mu.Unlock()
	if b.live.subj == nil {
		b.live.subj = make(map[*subject]struct{})
	}
	if on {
		b.live.subj[s] = struct{}{}
	} else {
		delete(b.live.subj, s)
	}
}

// killAll kills every subject still running.
func (b *bench) killAll() {
	b.live.mu.Lock()
	subj := make([]*subject, 0, len(b.live.subj))
	for s := range b.live.subj {
		subj = append(subj, s)
	}
	b.live.mu.Unlock()
	for _, s := range subj {
		s.stop()
	}
}

// procStat is the part of /proc/PID/stat the bench uses.
type procStat struct {
	pid, ppid int
	comm      string
}

// readStat reads /proc/PID/stat.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, false
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 2 {
		return procStat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	return procStat{pid: pid, ppid: ppid, comm: string(b[open+1 : end])}, true
}

// allProcs reads the stat of every process.
func allProcs() []procStat {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	out := make([]procStat, 0, len(names))
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			out = append(out, st)
		}
	}
	return out
}

// children returns the pids whose parent is pid.
func children(pid int) []int {
	var out []int
	for _, p := range allProcs() {
		if p.ppid == pid {
			out = append(out, p.pid)
		}
	}
	return out
}

// descendants returns every process below pid, pid excluded.
func descendants(pid int) []procStat {
	procs := allProcs()
	kids := make(map[int][]procStat)
	for _, p := range procs {
		kids[p.ppid] = append(kids[p.ppid], p)
	}
	var out []procStat
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, k := range kids[p] {
			out = append(out, k)
			queue = append(queue, k.pid)
		}
	}
	return out
}

// memory is a process set's memory in KiB.
type memory struct{ pss, rss int64 }

// memoryOf sums Pss and Rss of smaps_rollup over pids.
func memoryOf(pids []int) (memory, error) {
	var m memory
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
		if err != nil {
			return m, fmt.Errorf("cannot read memory of pid %d: %w", pid, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			v, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "Pss:":
				m.pss += v
			case "Rss:":
				m.rss += v
			}
		}
	}
	return m, nil
}

// exePath returns the program a process runs, or "".
func exePath(pid int) string {
	p, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return p
}

// execWatch times the executions of one file with fanotify
// (FAN_OPEN_EXEC): the kernel reports each process that executes it as it
// happens, with no polling. (inotify's IN_OPEN would do but merges
// identical events that are not yet read, so bursts lose executions.) The
// bench gives each watched program a private copy, so that nothing else
// on the machine runs it.
type execWatch struct {
	fd   int
	seen map[int32]bool // pids that have executed the file
}

func newExecWatch(path string) (*execWatch, error) {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("cannot watch %s: fanotify: %w", path, err)
	}
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD, unix.FAN_OPEN_EXEC, unix.AT_FDCWD, path); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("cannot watch %s: %w", path, err)
	}
	return &execWatch{fd: fd, seen: make(map[int32]bool)}, nil
}

func (w *execWatch) close() { unix.Close(w.fd) }

// errOverflow says the kernel dropped events: the times are incomplete.
var errOverflow = errors.New("fanotify queue overflowed")

// wait returns the time of each new process's execution of the file, as
// the bench saw it, until n have been seen or the deadline passes.
func (w *execWatch) wait(n int, deadline time.Time) ([]time.Time, error) {
	buf := make([]byte, 64<<10)
	var times []time.Time
	for len(times) < n {
		left := time.Until(deadline)
		if left <= 0 {
			return times, nil
		}
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return times, err
		}
		k, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return times, err
		}
		now := time.Now()
		for off := 0; off+int(unsafe.Sizeof(unix.FanotifyEventMetadata{})) <= k; {
			ev := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
			if ev.Event_len == 0 {
				break
			}
			off += int(ev.Event_len)
			if ev.Fd >= 0 {
				unix.Close(int(ev.Fd))
			}
			if ev.Mask&unix.FAN_Q_OVERFLOW != 0 {
				return times, errOverflow
			}
			if ev.Mask&unix.FAN_OPEN_EXEC != 0 && !w.seen[ev.Pid] {
				w.seen[ev.Pid] = true
				times = append(times, now)
			}
		}
	}
	return times, nil
}
