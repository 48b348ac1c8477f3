package initsys

// The process settings that only the shim can give a child: resource
// limits, nice value and umask (Proc.Rlimits, Proc.Nice, Proc.Umask).
//
// Go's fork child cannot set them between fork and exec, and metad
// cannot set them on itself around the fork: limits and the umask belong
// to the whole process (every goroutine of metad would run with them for
// a moment), and metad's own open-file limit must not shrink. Setting
// them on the child from metad after it starts, with prlimit(2) and
// setpriority(2), is a race: the program runs with metad's values until
// then, long enough to open its listening sockets, fork its workers (which
// keep the old limits and nice value: setpriority on a pid changes one
// thread), or create files with the wrong mode; and no system call sets
// another process's umask at all. So Spawn starts the shim (see Shim),
// which applies them and executes the program: the program has them from
// its first instruction, for the price of a second exec.
//
// The shim applies them while it still runs as metad (root, usually),
// then takes the Proc's user, as systemd does: so root can raise a hard
// limit or lower the nice value of a service that runs as another user.
// For the same reason the shim, not the fork child, takes Proc.Cred and
// changes to Proc.Dir, and it sets Proc.Pdeathsig again after changing
// its user, which clears it.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Rlimit is a resource limit for Proc.Rlimits, as setrlimit(2) takes it.
type Rlimit struct {
	Resource int    // unix.RLIMIT_NOFILE, unix.RLIMIT_CORE...
	Soft     uint64 // at most Hard; unix.RLIM_INFINITY for none
	Hard     uint64 // unix.RLIM_INFINITY for none; for RLIMIT_NOFILE it means fs.nr_open, the most the kernel allows
}

// procShimEnv carries, as JSON, the settings of the Proc that the shim
// applies (procSpec). Proc.attr adds it to the environment; the shim
// removes it before executing the program.
const procShimEnv = "METAD_PROC_SHIM"

// procSpec is what the shim does for a Proc besides its signal state.
type procSpec struct {
	Umask     *uint32             `json:",omitempty"`
	Nice      *int                `json:",omitempty"`
	Rlimits   []Rlimit            `json:",omitempty"`
	Cred      *syscall.Credential `json:",omitempty"`
	Dir       string              `json:",omitempty"`
	Pdeathsig syscall.Signal      `json:",omitempty"`
}

// needsShim reports whether p can start only through the shim.
func (p *Proc) needsShim() bool {
	return p.Umask != nil || p.Nice != nil || len(p.Rlimits) > 0 || p.Signals != nil && p.Signals.Ignored != 0
}

// shimSettings moves from attr into its environment what the shim must
// do for p: its settings, and the user, directory and parent-death signal
// that the shim must apply after them.
func (p *Proc) shimSettings(attr *syscall.ProcAttr) error {
	spec := procSpec{Nice: p.Nice, Rlimits: p.Rlimits, Cred: p.Cred, Dir: p.Dir, Pdeathsig: p.Pdeathsig}
	if p.Umask != nil {
		if *p.Umask&^fs.ModePerm != 0 {
			return fmt.Errorf("invalid umask %#o: want 0 to 0777", uint32(*p.Umask))
		}
		m := uint32(*p.Umask)
		spec.Umask = &m
	}
	if p.Nice != nil && (*p.Nice < -20 || *p.Nice > 19) {
		return fmt.Errorf("invalid nice value %d: want -20 to 19", *p.Nice)
	}
	for _, l := range p.Rlimits {
		if l.Soft > l.Hard {
			return fmt.Errorf("invalid %s: soft limit %d above hard limit %d", rlimitName(l.Resource), l.Soft, l.Hard)
		}
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("cannot encode the settings of the shim: %w", err)
	}
	attr.Env = append(attr.Env[:len(attr.Env):len(attr.Env)], procShimEnv+"="+string(b))
	attr.Dir = ""
	attr.Sys.Credential = nil // Pdeathsig stays: it ends the shim too if metad dies
	return nil
}

// viaShim reports whether attr is for the shim, as shimSettings left it.
func viaShim(attr *syscall.ProcAttr) bool {
	return len(attr.Env) > 0 && strings.HasPrefix(attr.Env[len(attr.Env)-1], procShimEnv+"=")
}

// rlimitName names a resource in errors: RLIMIT_NOFILE.
func rlimitName(resource int) string {
	switch resource {
	case unix.RLIMIT_NOFILE:
		return "RLIMIT_NOFILE"
	case unix.RLIMIT_NPROC:
		return "RLIMIT_NPROC"
	case unix.RLIMIT_CORE:
		return "RLIMIT_CORE"
	case unix.RLIMIT_MEMLOCK:
		return "RLIMIT_MEMLOCK"
	case unix.RLIMIT_STACK:
		return "RLIMIT_STACK"
	case unix.RLIMIT_AS:
		return "RLIMIT_AS"
	case unix.RLIMIT_CPU:
		return "RLIMIT_CPU"
	case unix.RLIMIT_FSIZE:
		return "RLIMIT_FSIZE"
	}
	return "resource limit " + strconv.Itoa(resource)
}

// The steps of the shim, as it reports the one that failed to Spawn.
const (
	stepExec      = iota  // executing the program: the error is the bare errno
	stepSignals           // the signal dispositions and mask
	stepNice              // setpriority(2)
	stepGroups            // setgroups(2)
	stepGID               // setgid(2)
	stepUID               // setuid(2)
	stepDir               // chdir(2)
	stepPdeathsig         // prctl(PR_SET_PDEATHSIG)
	stepRlimit    = 0x100 // + the resource: setrlimit(2)
)

// shimStepError is the error Spawn returns for a step of the shim that
// failed; it wraps the errno, so StartCode gives 126 or 127 as for an
// exec failure.
func shimStepError(step int, errno syscall.Errno) error {
	switch {
	case step == stepExec:
		return errno
	case step >= stepRlimit:
		return fmt.Errorf("cannot set %s: %w", rlimitName(step-stepRlimit), errno)
	case step == stepNice:
		return fmt.Errorf("cannot set the nice value: %w", errno)
	case step == stepGroups:
		return fmt.Errorf("cannot set the supplementary groups: %w", errno)
	case step == stepGID:
		return fmt.Errorf("cannot set the group id: %w", errno)
	case step == stepUID:
		return fmt.Errorf("cannot set the user id: %w", errno)
	case step == stepDir:
		return fmt.Errorf("cannot change to the working directory: %w", errno)
	default: // stepSignals, stepPdeathsig
		return fmt.Errorf("cannot set the signal state: %w", errno)
	}
}

// takeProcSpec returns the procSpec in env, if any, and env without it.
func takeProcSpec(env []string) (*procSpec, []string, error) {
	i := len(env) - 1
	if i < 0 || !strings.HasPrefix(env[i], procShimEnv+"=") {
		return nil, env, nil
	}
	var spec procSpec
	if err := json.Unmarshal([]byte(env[i][len(procShimEnv)+1:]), &spec); err != nil {
		return nil, nil, fmt.Errorf("bad %s: %w", procShimEnv, err)
	}
	return &spec, env[:i], nil
}

// applySettings applies the settings of spec that may need metad's privileges:
// the resource limits, the nice value and the umask. The caller is locked to the
// thread that will execute the program: the nice value is the thread's.
func applySettings(spec *procSpec) (step int, err error) {
	for _, l := range spec.Rlimits {
		lim := syscall.Rlimit{Cur: l.Soft, Max: l.Hard}
		if l.Resource == unix.RLIMIT_NOFILE {
			lim.Cur, lim.Max = nrOpen(lim.Cur), nrOpen(lim.Max)
		}
		// syscall.Setrlimit, not a raw system call: for RLIMIT_NOFILE
		// it also tells syscall.Exec not to restore the limit the shim
		// started with.
		if err := syscall.Setrlimit(l.Resource, &lim); err != nil {
			return stepRlimit + l.Resource, err
		}
	}
	if spec.Nice != nil {
		// PRIO_PROCESS 0 is the calling thread, which executes the
		// program: its nice value is what the program starts with.
		if err := unix.Setpriority(unix.PRIO_PROCESS, 0, *spec.Nice); err != nil {
			return stepNice, err
		}
	}
	if spec.Umask != nil {
		syscall.Umask(int(*spec.Umask))
	}
	return 0, nil
}

// nrOpen returns v, or for unix.RLIM_INFINITY the most open files the
// kernel allows (fs.nr_open), which is what an unlimited RLIMIT_NOFILE
// means: setrlimit(2) refuses more. v is left as it is when the value
// cannot be read.
func nrOpen(v uint64) uint64 {
	if v != unix.RLIM_INFINITY {
		return v
	}
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return v
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return v
	}
	return n
}

// becomeUser takes the user and groups of spec, changes to its directory
// and sets its parent-death signal, on the calling thread only: that
// thread executes the program, which gets its credentials. A Go program
// would change every thread (syscall.Setuid does); this one is about to
// replace itself, and its other threads end with the exec.
func becomeUser(spec *procSpec, ppid int) (step int, err error) {
	if c := spec.Cred; c != nil {
		if !c.NoSetGroups {
			var groups unsafe.Pointer
			if len(c.Groups) > 0 {
				groups = unsafe.Pointer(&c.Groups[0])
			}
			if _, _, e := syscall.RawSyscall(sysSetgroups, uintptr(len(c.Groups)), uintptr(groups), 0); e != 0 {
				return stepGroups, e
			}
		}
		if _, _, e := syscall.RawSyscall(sysSetgid, uintptr(c.Gid), 0, 0); e != 0 {
			return stepGID, e
		}
		if _, _, e := syscall.RawSyscall(sysSetuid, uintptr(c.Uid), 0, 0); e != 0 {
			return stepUID, e
		}
	}
	if spec.Dir != "" {
		if err := syscall.Chdir(spec.Dir); err != nil {
			return stepDir, err
		}
	}
	if spec.Pdeathsig != 0 {
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(spec.Pdeathsig), 0); e != 0 {
			return stepPdeathsig, e
		}
		if os.Getppid() != ppid {
			// metad died before the signal was set: act as if it had
			// been set before, as Go's fork child does.
			syscall.Kill(os.Getpid(), spec.Pdeathsig)
		}
	}
	return 0, nil
}

// errnoOf returns the errno inside err, or EINVAL.
func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		errno = syscall.EINVAL
	}
	return errno
}
