//go:build 386 || arm

package initsys

import "golang.org/x/sys/unix"

// The system calls that set 32-bit user and group ids: on these
// architectures the plain ones take 16-bit ids.
const (
	sysSetgroups = unix.SYS_SETGROUPS32
	sysSetgid    = unix.SYS_SETGID32
	sysSetuid    = unix.SYS_SETUID32
)
