//go:build !(386 || arm)

package initsys

import "golang.org/x/sys/unix"

// The system calls that set 32-bit user and group ids.
const (
	sysSetgroups = unix.SYS_SETGROUPS
	sysSetgid    = unix.SYS_SETGID
	sysSetuid    = unix.SYS_SETUID
)
