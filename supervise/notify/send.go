package notify

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Send sends state, newline-separated assignments ("READY=1\nSTATUS=..."),
// in one datagram to addr, a NOTIFY_SOCKET value: "@name" for an abstract
// socket or an absolute path. Other forms (systemd's "vsock:...") are
// errors. The datagram carries metad's credentials. Send never blocks: a
// receiver whose queue is full is an error (EAGAIN), as is one that is
// gone (ECONNREFUSED, ENOENT). It is safe for concurrent use.
func Send(addr, state string) error {
	if err := send(addr, state); err != nil {
		return fmt.Errorf("cannot notify %q: %w", addr, err)
	}
	return nil
}

func send(addr, state string) error {
	switch {
	case len(addr) > maxAddr:
		return fmt.Errorf("address longer than %d bytes", maxAddr)
	case len(addr) > 1 && addr[0] == '@', filepath.IsAbs(addr):
	default:
		return errors.New("not an absolute path or an abstract socket name (@NAME)")
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	creds := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())})
	to := &unix.SockaddrUnix{Name: addr}
	for {
		err = unix.Sendmsg(fd, []byte(state), creds, to, 0)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
