package initsys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Proc describes a process to start. Spawn does not modify it.
type Proc struct {
	Path string   // absolute path of the program
	Argv []string // argv, argv[0] included
	Env  []string // the whole environment; nil: metad's own
	Dir  string   // working directory; "": metad's

	// Files[i], a descriptor of metad's that the caller keeps open until
	// Spawn returns, becomes the child's descriptor i; a negative entry
	// leaves descriptor i closed. Every other descriptor is closed in the
	// child.
	Files []int

	Cred *syscall.Credential // nil: run as metad

	// Setsid starts the child in a new session and process group (every
	// service instance).
	Setsid bool

	// Foreground starts the child in a process group of its own and makes
	// it the foreground group of the terminal Files[0], which must be
	// metad's controlling terminal (see InForeground). It is for command
	// mode on a terminal and excludes Setsid.
	Foreground bool

	// Pdeathsig, if not zero, is sent to the child when the thread that
	// started it ends. Go ends a thread only when a goroutine exits while
	// locked to it, which metad never does, so in practice it is sent
	// when metad dies.
	Pdeathsig syscall.Signal

	// Signals, if not nil, is the signal state the child starts with:
	// those signals ignored and those blocked. nil is the defaults, none
	// ignored and none blocked, whatever metad was started with. It is
	// for the command of command mode, which gets StartSignals(); with
	// any signal ignored, Spawn starts it through a shim (see Shim).
	Signals *SignalState

	// Cgroup, if not nil, is the cgroup v2 the child starts in (clone3
	// with CLONE_INTO_CGROUP): it is in it from its first instruction,
	// before it can fork, and so is everything it forks. See Cgroups.
	Cgroup *Cgroup

	// Umask, if not nil, is the child's file mode creation mask, 0 to
	// 0777; nil: metad's.
	Umask *fs.FileMode
	// Nice, if not nil, is the child's nice value, -20 to 19; nil:
	// metad's. Below metad's own it needs root (CAP_SYS_NICE).
	Nice *int
	// Rlimits are resource limits the child starts with, set while it is
	// still metad's user, before it takes Cred: root can raise a hard
	// limit for another user. The limits not named are metad's (its
	// open-file limit as metad was started with it).
	Rlimits []Rlimit
	// With any of Umask, Nice and Rlimits, Spawn starts the child through
	// the shim (see Shim), which costs a second exec; a Proc without them
	// costs nothing more.
}

// attr translates p for syscall.ForkExec.
func (p *Proc) attr() (*syscall.ProcAttr, error) {
	if p.Setsid && p.Foreground {
		return nil, errors.New("new session and terminal foreground exclude each other")
	}
	if p.Foreground && (len(p.Files) == 0 || p.Files[0] < 0) {
		return nil, errors.New("terminal foreground needs the terminal as descriptor 0")
	}
	env := p.Env
	if env == nil {
		env = os.Environ()
	}
	files := make([]uintptr, len(p.Files))
	for i, fd := range p.Files {
		files[i] = uintptr(fd) // -1 becomes ^uintptr(0): closed in the child
	}
	sys := &syscall.SysProcAttr{
		Credential: p.Cred,
		Setsid:     p.Setsid,
		Pdeathsig:  p.Pdeathsig,
	}
	if p.Cgroup != nil {
		if p.Cgroup.fd < 0 {
			return nil, fmt.Errorf("cgroup %q removed", p.Cgroup.dir)
		}
		sys.UseCgroupFD = true
		sys.CgroupFD = p.Cgroup.fd
	}
	if p.Foreground {
		sys.Setpgid = true
		sys.Foreground = true
		sys.Ctty = p.Files[0] // a descriptor of metad's, as Foreground wants
	}
	attr := &syscall.ProcAttr{Dir: p.Dir, Env: env, Files: files, Sys: sys}
	if p.needsShim() {
		if err := p.shimSettings(attr); err != nil {
			return nil, err
		}
	}
	return attr, nil
}

// InForeground reports whether fd is metad's controlling terminal and
// metad's process group is its foreground group: the condition under which
// metad may hand the terminal to a child with Proc.Foreground.
func InForeground(fd int) bool {
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

// CloseOnExecAll marks every descriptor above 2 close-on-exec, so that
// descriptors metad inherited (from its parent, or from itself across a
// re-exec) never leak into its children; they stay open in metad. Call it
// at start-up, after taking over any inherited descriptor, and before the
// first Spawn. Descriptors metad opens itself need nothing: Go opens them
// close-on-exec.
func CloseOnExecAll() error {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("cannot mark descriptors close-on-exec: %w", err)
	}
	// Before Linux 5.11: one descriptor at a time.
	dir, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("cannot mark descriptors close-on-exec: %w", err)
	}
	for _, d := range dir {
		fd, err := strconv.Atoi(d.Name())
		if err != nil || fd <= 2 {
			continue
		}
		syscall.CloseOnExec(fd) // the directory's own descriptor is gone: EBADF, harmless
	}
	return nil
}
