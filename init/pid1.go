package initsys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// SetSubreaper makes metad a child subreaper (PR_SET_CHILD_SUBREAPER):
// orphans among its descendants, such as daemons that double-fork, are
// re-parented to metad instead of PID 1, so that the Reaper sees them end.
// PID 1 needs no such thing.
func SetSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("cannot become a subreaper: %w", err)
	}
	return nil
}

// MachineInit reports whether metad is PID 1 of the machine (the initial
// PID namespace) rather than of a container, by asking the kernel.
//
// Not PID 1, it returns false without a system call. As PID 1 it calls
// reboot(LINUX_REBOOT_CMD_CAD_OFF), which the kernel (kernel/reboot.c)
// refuses with EPERM without CAP_SYS_BOOT in the namespace's user
// namespace, and, in a child PID namespace, hands to reboot_pid_ns, which
// accepts only restart, power-off and halt and refuses the rest with
// EINVAL. Only in the initial namespace does it succeed, and then it also
// makes Ctrl-Alt-Del send SIGINT to PID 1 instead of rebooting at once,
// which is what metad wants there.
func MachineInit() bool {
	if os.Getpid() != 1 {
		return false
	}
	return unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF) == nil
}

// A mount is one of the file systems MountEssentials provides.
type mount struct {
	dir    string // under the root
	fstype string
	flags  uintptr
	data   string
}

// essentials are the file systems of a running Linux system, mounted as
// systemd mounts them.
var essentials = []mount{
	{"proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"dev", "devtmpfs", unix.MS_NOSUID | unix.MS_STRICTATIME, "mode=0755"},
	{"run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_STRICTATIME, "mode=0755"},
	// The cgroup v2 hierarchy, for a cgroup per service (NewCgroups).
	// Without nsdelegate, an option of the whole hierarchy that a test in
	// a mount namespace would change for the machine.
	{"sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RELATIME, ""},
}

// MountEssentials mounts /proc (proc), /sys (sysfs), /dev (devtmpfs), /run
// (tmpfs, mode 0755) and /sys/fs/cgroup (cgroup2) where each is not a
// mount point already, creating the directory if it is missing. It tries every one and returns every
// error, joined. It is for PID 1 of the machine.
func MountEssentials() error {
	return mountUnder("/")
}

// mountUnder mounts the essentials under root.
func mountUnder(root string) error {
	var errs []error
	for _, m := range essentials {
		dir := filepath.Join(root, m.dir)
		if err := m.mountOn(dir); err != nil {
			errs = append(errs, fmt.Errorf("cannot mount %s on %q: %w", m.fstype, dir, err))
		}
	}
	return errors.Join(errs...)
}

// mountOn mounts m on dir unless dir is a mount point.
func (m mount) mountOn(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	mounted, err := isMountPoint(dir)
	if err != nil || mounted {
		return err
	}
	return unix.Mount(m.fstype, dir, m.fstype, m.flags, m.data)
}

// isMountPoint reports whether dir is the root of a mount. It needs no
// /proc: statx says so since Linux 5.8; before, dir is a mount point when
// it is on another device than its parent, or is its own parent (/).
func isMountPoint(dir string) (bool, error) {
	const mask = unix.STATX_TYPE | unix.STATX_INO
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, 0, mask, &st); err != nil {
		return false, err
	}
	if st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	var parent unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, filepath.Join(dir, ".."), 0, mask, &parent); err != nil {
		return false, err
	}
	return st.Dev_major != parent.Dev_major || st.Dev_minor != parent.Dev_minor || st.Ino == parent.Ino, nil
}

// KillAll sends sig to every process metad may signal but itself
// (kill(-1, sig)). As PID 1 of a PID namespace, that is every other
// process in it. To guard against the disaster it would be anywhere else,
// it refuses unless metad is PID 1. No process left (ESRCH) is no error.
func KillAll(sig syscall.Signal) error {
	if os.Getpid() != 1 {
		return errors.New("cannot signal every process: not PID 1")
	}
	if err := syscall.Kill(-1, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("cannot signal every process: %w", err)
	}
	return nil
}

// Final is how a machine ends.
type Final uint8

// The ends of Finish. The zero value is Poweroff, the default at shutdown.
const (
	Poweroff Final = iota
	Reboot
	Halt
)

// String returns the final's name, as metac spells the command.
func (f Final) String() string {
	switch f {
	case Poweroff:
		return "poweroff"
	case Reboot:
		return "reboot"
	case Halt:
		return "halt"
	default:
		return "final(" + strconv.Itoa(int(f)) + ")"
	}
}

// Finish syncs the file systems and then powers off, reboots or halts the
// machine with reboot(2). It returns only on error. Call it as PID 1 of
// the machine, with every other process gone (Drain). As PID 1 of a child
// PID namespace it ends the namespace instead: the kernel kills its
// processes and reports to the namespace's parent that PID 1 died of
// SIGHUP (Reboot) or SIGINT (Poweroff, Halt).
func Finish(f Final) error {
	var cmd uint32 // reboot(2) reads an unsigned int; HALT does not fit a 32-bit int
	switch f {
	case Poweroff:
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	case Reboot:
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	case Halt:
		cmd = unix.LINUX_REBOOT_CMD_HALT
	default:
		return fmt.Errorf("cannot finish with %v: unknown", f)
	}
	unix.Sync()
	if err := unix.Reboot(int(int32(cmd))); err != nil {
		return fmt.Errorf("cannot %v: %w", f, err)
	}
	return nil
}
