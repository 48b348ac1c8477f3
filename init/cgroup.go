package initsys

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// ErrNoCgroups is returned, wrapped, by NewCgroups when metad is not in a
// cgroup v2 hierarchy at all: no cgroup2 file system is mounted, or
// /proc/self/cgroup has no "0::" line (a cgroup v1 only system).
var ErrNoCgroups = errors.New("no cgroup v2 hierarchy")

// Cgroups is the cgroup v2 subtree of metad's services: one cgroup that
// NewCgroups creates under metad's own, and in it one cgroup per service.
// A process started into a service's cgroup (Proc.Cgroup) and everything
// it forks stay in it, whatever they do with sessions and process groups,
// so the cgroup lists, signals and kills the whole service.
//
// metad stays in its own cgroup, above the subtree. That breaks no rule of
// cgroup v2: "no internal processes" forbids a cgroup with processes only
// to enable controllers for its children, and metad enables none; it uses
// only the core files (cgroup.procs, cgroup.events, cgroup.kill), which
// every cgroup has. Resource limits per service would need metad to move
// itself into a leaf first; they are not done.
//
// Its methods are safe for concurrent use.
type Cgroups struct {
	log  zerolog.Logger
	dir  string // the subtree's directory
	kill bool   // cgroup.kill exists (Linux 5.14)
}

// NewCgroups creates (or, after a re-exec, takes over) the cgroup name
// under metad's own cgroup v2 and returns it, or says why metad cannot
// have one: not in a cgroup v2 hierarchy (ErrNoCgroups), a hierarchy that
// metad may not write (a container's read-only /sys/fs/cgroup, a cgroup
// not delegated to it), or a kernel that cannot start a process into a
// cgroup (clone3 with CLONE_INTO_CGROUP, Linux 5.7, or refused by a
// seccomp filter). Where that fails, metad keeps its services' processes
// in custody by process group and session only.
//
// Where metad may write is where it may create cgroups: as PID 1 of a
// machine, the root of the hierarchy (MountEssentials mounts it); in a
// container, its cgroup namespace's root when /sys/fs/cgroup is writable;
// under a service manager, a cgroup delegated to it (systemd's
// Delegate=yes); as root elsewhere, under whatever cgroup it runs in.
//
// name must be a single path element, and unique among the metads that
// share a cgroup: "metad." followed by metad's pid is one that a re-exec
// keeps.
func NewCgroups(log zerolog.Logger, name string) (*Cgroups, error) {
	if !validCgroupName(name) {
		return nil, fmt.Errorf("cannot create cgroup %q: not a single path element", name)
	}
	own, err := ownCgroup()
	if err != nil {
		return nil, fmt.Errorf("cannot create cgroup %q: %w", name, err)
	}
	dir := filepath.Join(own, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("cannot create cgroup %q: %w", dir, err)
	}
	if err := probeCloneIntoCgroup(); err != nil {
		os.Remove(dir) // only if empty, which it is unless a re-exec left it in use
		return nil, fmt.Errorf("cannot start processes into cgroup %q: %w", dir, err)
	}
	_, err = os.Stat(filepath.Join(dir, "cgroup.kill"))
	cg := &Cgroups{log: log, dir: dir, kill: err == nil}
	log.Debug().Str("cgroup", dir).Bool("kill", cg.kill).Msg("service cgroups ready")
	return cg, nil
}

// Dir returns the subtree's directory.
func (cg *Cgroups) Dir() string { return cg.dir }

// Service creates (or takes over, after a re-exec) the cgroup of the
// service name, a directory named name+".service" under the subtree (so
// that no service name can clash with the kernel's files there), and
// returns it with its directory open for Proc.Cgroup.
func (cg *Cgroups) Service(name string) (*Cgroup, error) {
	if !validCgroupName(name) {
		return nil, fmt.Errorf("cannot create cgroup of service %q: not a single path element", name)
	}
	dir := filepath.Join(cg.dir, name+".service")
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("cannot create cgroup %q: %w", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot open cgroup %q: %w", dir, err)
	}
	return &Cgroup{dir: dir, fd: fd, kill: cg.kill}, nil
}

// Services returns the names of the services whose cgroups exist in the
// subtree, in directory order: after a re-exec, those of services the
// new configuration may no longer have.
func (cg *Cgroups) Services() ([]string, error) {
	entries, err := os.ReadDir(cg.dir)
	if err != nil {
		return nil, fmt.Errorf("cannot list cgroup %q: %w", cg.dir, err)
	}
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".service"); ok && e.IsDir() {
			names = append(names, name)
		}
	}
	return names, nil
}

// Remove removes the subtree's own cgroup. It fails (EBUSY) while any
// service cgroup is left in it: remove those first.
func (cg *Cgroups) Remove() error {
	if err := unix.Rmdir(cg.dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("cannot remove cgroup %q: %w", cg.dir, err)
	}
	return nil
}

// Cgroup is the cgroup of one service. Its methods are safe for concurrent
// use, except Remove, which must not overlap a Spawn into the cgroup.
type Cgroup struct {
	dir  string
	fd   int  // O_PATH descriptor of dir; -1 once removed
	kill bool // cgroup.kill exists
}

// Dir returns the cgroup's directory.
func (c *Cgroup) Dir() string { return c.dir }

// FD returns the cgroup's directory descriptor, which Proc.Cgroup starts a
// process into (CLONE_INTO_CGROUP), or -1 once it is removed. The cgroup
// keeps it open until Remove.
func (c *Cgroup) FD() int { return c.fd }

// PIDs returns the pids of every process in the cgroup, in no particular
// order: those started into it and everything they forked, whatever
// became of their sessions and parents. A process that has exited but is
// not reaped yet is no longer listed, though it keeps the cgroup populated.
func (c *Cgroup) PIDs() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("cannot list cgroup %q: %w", c.dir, err)
	}
	var pids []int
	for _, f := range bytes.Fields(b) {
		pid, err := strconv.Atoi(string(f))
		if err != nil {
			return nil, fmt.Errorf("cannot list cgroup %q: %w", c.dir, err)
		}
		if pid > 0 { // 0: a process outside metad's PID namespace
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Signal sends sig to every process in the cgroup, once: a process forked
// meanwhile may miss it (for SIGKILL, use Kill). A process gone meanwhile
// is no error; the first other error is returned, after trying every
// process.
func (c *Cgroup) Signal(sig syscall.Signal) error {
	pids, err := c.PIDs()
	if err != nil {
		return err
	}
	var first error
	for _, pid := range pids {
		if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) && first == nil {
			first = fmt.Errorf("cannot signal process %d in cgroup %q: %w", pid, c.dir, err)
		}
	}
	return first
}

// Kill sends SIGKILL to every process in the cgroup, including those forked
// while it runs: with cgroup.kill (Linux 5.14) the kernel does it in one
// step; before, Kill signals every listed process and lists again until a
// listing shows no process it has not signalled (a killed process cannot
// fork any more). It does not wait for the processes to end: see Wait.
//
// Use it only on a cgroup that nothing will be started into again: on
// the kernels seen here (6.18), once cgroup.kill has been written, every
// later process started into the cgroup with CLONE_INTO_CGROUP is killed
// at once. A cgroup that is reused must be emptied with Signal instead.
func (c *Cgroup) Kill() error {
	if c.kill {
		err := os.WriteFile(filepath.Join(c.dir, "cgroup.kill"), []byte("1"), 0)
		if err == nil {
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cannot kill cgroup %q: %w", c.dir, err)
		}
	}
	return c.killEach()
}

// killEach is Kill without cgroup.kill.
func (c *Cgroup) killEach() error {
	signalled := make(map[int]bool)
	for {
		pids, err := c.PIDs()
		if err != nil {
			return err
		}
		fresh := false
		for _, pid := range pids {
			if signalled[pid] {
				continue
			}
			fresh, signalled[pid] = true, true
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("cannot kill process %d in cgroup %q: %w", pid, c.dir, err)
			}
		}
		if !fresh {
			return nil
		}
	}
}

// Populated reports whether any process is in the cgroup, including one
// that has exited and is not reaped yet (cgroup.events). A removed cgroup
// is not.
func (c *Cgroup) Populated() (bool, error) {
	f, err := os.Open(filepath.Join(c.dir, "cgroup.events"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cannot read cgroup %q: %w", c.dir, err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "populated "); ok {
			return v != "0", nil
		}
	}
	if err := s.Err(); err != nil {
		return false, fmt.Errorf("cannot read cgroup %q: %w", c.dir, err)
	}
	return false, fmt.Errorf("cannot read cgroup %q: no populated field in cgroup.events", c.dir)
}

// Wait blocks until the cgroup is empty (not Populated: every process in
// it has exited and been reaped, or the cgroup is removed) or ctx is done, and returns ctx's error
// then. It wakes on the kernel's notification of a change to
// cgroup.events, never on a timer.
func (c *Cgroup) Wait(ctx context.Context) error {
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("cannot watch cgroup %q: %w", c.dir, err)
	}
	f := os.NewFile(uintptr(in), "inotify") // non-blocking: the poller takes it
	defer f.Close()
	_, err = unix.InotifyAddWatch(in, filepath.Join(c.dir, "cgroup.events"), unix.IN_MODIFY)
	if errors.Is(err, unix.ENOENT) {
		return nil // removed, so empty
	}
	if err != nil {
		return fmt.Errorf("cannot watch cgroup %q: %w", c.dir, err)
	}
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 4096)
	for {
		populated, err := c.Populated()
		if err != nil {
			return err
		}
		if !populated {
			return nil
		}
		if _, err := f.Read(buf); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("cannot watch cgroup %q: %w", c.dir, err)
		}
	}
}

// Remove removes the cgroup and closes its descriptor. It fails (EBUSY)
// while the cgroup is populated: Kill and Wait first. A cgroup already
// gone is no error.
func (c *Cgroup) Remove() error {
	if err := unix.Rmdir(c.dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("cannot remove cgroup %q: %w", c.dir, err)
	}
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
	return nil
}

// validCgroupName reports whether name can be a cgroup's directory name.
func validCgroupName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\n\x00")
}

// ownCgroup returns the directory of metad's own cgroup v2: its path in
// /proc/self/cgroup ("0::PATH"), under the cgroup2 mount that holds it.
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("cannot read own cgroup: %w", err)
	}
	path, ok := "", false
	for line := range strings.Lines(string(b)) {
		if path, ok = strings.CutPrefix(strings.TrimSuffix(line, "\n"), "0::"); ok {
			break
		}
	}
	if !ok {
		return "", ErrNoCgroups
	}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("cannot read mounts: %w", err)
	}
	dir, err := cgroupDir(string(info), path)
	if err != nil {
		return "", err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", fmt.Errorf("cannot read own cgroup %q: %w", dir, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return "", fmt.Errorf("cannot use own cgroup %q: not on a cgroup2 file system", dir)
	}
	return dir, nil
}

// cgroupDir returns the directory of the cgroup v2 path in the mount table
// mountinfo (/proc/self/mountinfo): under the first cgroup2 mount whose
// root holds path (with a cgroup namespace, "/"), preferring
// /sys/fs/cgroup (a unified system) to others (/sys/fs/cgroup/unified on
// a hybrid one).
func cgroupDir(mountinfo, path string) (string, error) {
	best := ""
	for line := range strings.Lines(mountinfo) {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 {
			continue
		}
		root, mnt := unescapeMount(f[3]), unescapeMount(f[4])
		rel, ok := strings.CutPrefix(path, root)
		if !ok || (rel != "" && root != "/" && !strings.HasPrefix(rel, "/")) {
			continue
		}
		dir := filepath.Join(mnt, rel)
		if best == "" || mnt == "/sys/fs/cgroup" {
			best = dir
		}
	}
	if best == "" {
		return "", ErrNoCgroups
	}
	return best, nil
}

// unescapeMount undoes the octal escapes (\040 for a space) of a path in
// /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// probeCloneIntoCgroup asks the kernel whether clone3 can start a process
// into a cgroup, without starting one: with CLONE_INTO_CGROUP and a
// descriptor that cannot be open (INT_MAX), a kernel that can fails with
// EBADF; one before Linux 5.7 refuses the flag (EINVAL); one before 5.3,
// or a seccomp filter that hides clone3 (as container runtimes' defaults
// did), has no clone3 (ENOSYS).
func probeCloneIntoCgroup() error {
	const cloneIntoCgroup = 0x200000000 // CLONE_INTO_CGROUP
	args := struct {
		flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls, setTID, setTIDSize, cgroup uint64
	}{flags: cloneIntoCgroup, exitSignal: uint64(unix.SIGCHLD), cgroup: 1<<31 - 1}
	pid, _, errno := unix.RawSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args), 0)
	switch {
	case errno == 0 && pid == 0:
		// Cannot be: the descriptor is not open. Were it, this would
		// be a child: end it at once.
		unix.RawSyscall(unix.SYS_EXIT, 127, 0, 0)
	case errno == 0:
		return nil // the child above; the Reaper reaps it as an orphan
	}
	switch errno {
	case unix.EBADF:
		return nil
	case unix.ENOSYS:
		return fmt.Errorf("no clone3 (Linux 5.3, or hidden by a seccomp filter): %w", errno)
	case unix.EINVAL:
		return fmt.Errorf("no CLONE_INTO_CGROUP (Linux 5.7): %w", errno)
	default:
		return fmt.Errorf("clone3 with CLONE_INTO_CGROUP: %w", errno)
	}
}
