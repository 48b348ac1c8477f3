package notify

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MaxDatagram is the longest notification read, as systemd reads them
// (NOTIFY_BUFFER_MAX, which is PIPE_BUF): a longer one is reported
// truncated and not parsed.
const MaxDatagram = 4096

// maxFDs is the most descriptors one message can carry (the kernel's
// SCM_MAX_FD): room for them all, so that a notification sent with
// descriptors is read whole, as systemd reads it, and they are closed.
const maxFDs = 253

// recvBuffer is the receive buffer asked for (SO_RCVBUF; the kernel caps
// it at net.core.rmem_max): room for a burst of notifications from one
// service. How many datagrams may wait is net.unix.max_dgram_qlen.
const recvBuffer = 256 << 10

// maxAddr is the longest address, '@' included: sun_path less its NUL.
const maxAddr = len(unix.RawSockaddrUnix{}.Path) - 1

// The errors of a Socket's methods that callers branch on.
var (
	ErrNoDatagram = errors.New("no datagram waiting")       // Recv: nothing to read now
	ErrClosed     = errors.New("notify socket closed")      // the socket was closed
	ErrStopped    = errors.New("wait for datagram stopped") // Wait: stop was closed
)

// Socket is a service's receiving socket: an AF_UNIX datagram socket,
// close-on-exec and non-blocking, that receives its senders' credentials.
// Listen, ListenPath and FromFD make one; the zero value is not usable.
//
// Its owner reads datagrams with Recv, which never blocks, until it
// returns ErrNoDatagram; a helper goroutine blocks in Wait until the
// next one arrives and tells the owner. Recv, Wait, Addr, Dup and Close
// are safe for concurrent use, but Wait is for one goroutine at a time.
type Socket struct {
	f    *os.File
	rc   syscall.RawConn
	addr string // NOTIFY_SOCKET: "@name" or an absolute path
	path string // the file Close removes; "" for an abstract name

	mu  sync.Mutex // Recv's buffers, reused; held only around recvmsg
	buf []byte
	oob []byte
}

// Datagram is one datagram received, with its sender's credentials as
// the kernel gives them (SCM_CREDENTIALS), translated into metad's PID
// and user namespaces.
type Datagram struct {
	Message Message // what it asks, if it is a notification
	// Err says why it is not a notification (see Parse); Message is
	// then zero.
	Err error
	// Truncated: longer than MaxDatagram, or with descriptors that
	// could not all be received (metad out of descriptors), and so not
	// parsed: Message is zero, as systemd ignores it.
	Truncated bool

	// PID is the sender's process ID. 0: no credentials came with it
	// (it was queued before they were asked for), or the sender is in
	// a PID namespace that metad cannot see. Such a datagram belongs to
	// no service.
	PID int
	// UID and GID are the sender's user and group, valid when PID is
	// not 0.
	UID, GID uint32

	// FDs is how many descriptors came with the datagram: all are
	// closed already.
	FDs int
}

// Listen binds a new socket for the service name in the abstract
// namespace, at "@metad/PID/NAME/RANDOM": unique to this metad and
// service, and seen as such in ss(8). An abstract socket needs no file
// and no permission, and is reachable from metad's network namespace
// only: a program in another one cannot notify it (use ListenPath).
// Anyone there may send to it: only credentials tell senders apart.
func Listen(name string) (*Socket, error) {
	for tries := 0; ; tries++ {
		addr := abstractAddr(name, os.Getpid(), rand.Uint32())
		s, err := listen(addr, "")
		if errors.Is(err, unix.EADDRINUSE) && tries < 3 {
			continue // another metad drew the same name
		}
		if err != nil {
			return nil, fmt.Errorf("cannot listen for notifications of %q: %w", name, err)
		}
		return s, nil
	}
}

// abstractAddr returns the abstract address for service name, the name
// cut short to fit.
func abstractAddr(name string, pid int, r uint32) string {
	head := "@metad/" + strconv.Itoa(pid) + "/"
	tail := fmt.Sprintf("/%08x", r)
	if room := maxAddr - len(head) - len(tail); len(name) > room {
		name = name[:max(room, 0)]
	}
	return head + name + tail
}

// ListenPath binds a new socket at path, an absolute path, for systems
// where the abstract namespace is not wanted (a program in its own
// network namespace, say). A socket already at path, left by an earlier
// run, is replaced; any other file there is an error. The socket file is
// made writable by everyone (mode 0666) so that programs running as
// other users can send; the directory must let them reach it. Close
// removes it.
func ListenPath(path string) (*Socket, error) {
	s, err := listenPath(path)
	if err != nil {
		return nil, fmt.Errorf("cannot listen for notifications at %q: %w", path, err)
	}
	return s, nil
}

func listenPath(path string) (*Socket, error) {
	if !filepath.IsAbs(path) {
		return nil, errors.New("not an absolute path")
	}
	if len(path) > maxAddr {
		return nil, fmt.Errorf("longer than %d bytes", maxAddr)
	}
	switch fi, err := os.Lstat(path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, errors.New("exists and is not a socket")
	default:
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	return listen(path, path)
}

// listen binds a new socket at addr and takes it in. path is the file
// of a path socket, "" for an abstract one.
func listen(addr, path string) (*Socket, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	// Credentials are asked for before the socket has a name: no
	// datagram can arrive without them.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("cannot ask for credentials: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, recvBuffer) // the default will do
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if path != "" {
		if err := os.Chmod(path, 0o666); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return nil, err
		}
	}
	return wrap(fd, addr, path), nil
}

// wrap makes a Socket of fd, a non-blocking socket, which it owns from
// then on: Go's poller takes it, for Wait.
func wrap(fd int, addr, path string) *Socket {
	f := os.NewFile(uintptr(fd), "notify "+addr)
	rc, _ := f.SyscallConn() // a real *os.File: no error
	oob := unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(4*maxFDs)
	return &Socket{f: f, rc: rc, addr: addr, path: path, buf: make([]byte, MaxDatagram), oob: make([]byte, oob)}
}

// FromFD takes back a socket that Dup handed to this image of metad,
// bound at addr (Addr's value). It owns fd from then on, even on error:
// fd must be an AF_UNIX datagram socket bound at addr. It makes fd
// close-on-exec and non-blocking again and asks for credentials again.
func FromFD(fd int, addr string) (*Socket, error) {
	if err := check(fd, addr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("cannot take notify socket %q: %w", addr, err)
	}
	path := ""
	if addr[0] != '@' {
		path = addr
	}
	return wrap(fd, addr, path), nil
}

// check makes fd fit for FromFD.
func check(fd int, addr string) error {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return err
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return err
	}
	if domain != unix.AF_UNIX || typ != unix.SOCK_DGRAM {
		return errors.New("not a unix datagram socket")
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return err
	}
	if u, ok := sa.(*unix.SockaddrUnix); !ok || u.Name != addr || addr == "" {
		return errors.New("bound elsewhere")
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
}

// Addr returns the value of NOTIFY_SOCKET for the service's programs:
// "@name" for an abstract socket, an absolute path otherwise.
func (s *Socket) Addr() string { return s.addr }

// Recv reads the next datagram without blocking, or returns
// ErrNoDatagram if none is waiting, or ErrClosed. A datagram that is no
// notification is returned all the same, with its Err or Truncated set:
// the caller may log it with its sender. Descriptors that came with it
// are closed before Recv returns.
func (s *Socket) Recv() (Datagram, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n, oobn, flags int
	var err error
	cerr := s.rc.Control(func(fd uintptr) {
		for {
			n, oobn, flags, _, err = unix.Recvmsg(int(fd), s.buf, s.oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
			if !errors.Is(err, unix.EINTR) {
				return
			}
		}
	})
	switch {
	case cerr != nil:
		return Datagram{}, ErrClosed
	case errors.Is(err, unix.EAGAIN):
		return Datagram{}, ErrNoDatagram
	case err != nil:
		return Datagram{}, fmt.Errorf("cannot receive on notify socket %q: %w", s.addr, err)
	}
	var d Datagram
	d.PID, d.UID, d.GID, d.FDs = control(s.oob[:oobn])
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		d.Truncated = true
		return d, nil
	}
	d.Message, d.Err = Parse(s.buf[:n])
	return d, nil
}

// control reads the control messages of a datagram: the credentials, if
// any, and descriptors, which it closes.
func control(oob []byte) (pid int, uid, gid uint32, fds int) {
	msgs, _ := unix.ParseSocketControlMessage(oob) // the kernel's own: well formed
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_RIGHTS:
			rights, _ := unix.ParseUnixRights(m)
			for _, fd := range rights {
				unix.Close(fd)
			}
			fds += len(rights)
		case unix.SCM_CREDENTIALS:
			if c, err := unix.ParseUnixCredentials(m); err == nil && c.Pid > 0 {
				pid, uid, gid = int(c.Pid), c.Uid, c.Gid
			}
		}
	}
	return pid, uid, gid, fds
}

// longAgo is a deadline that has passed: it ends a wait at once.
var longAgo = time.Unix(1, 0)

// Wait blocks until a datagram is waiting to be read (or the socket has
// an error for Recv to report) and returns nil, or until stop is closed
// (ErrStopped) or the socket is (ErrClosed). It reads nothing.
//
// It asks the kernel whether the socket is readable from inside
// RawConn.Read, after Go's poller has been armed for the wait, so that a
// datagram arriving at any moment wakes it: none is missed.
func (s *Socket) Wait(stop <-chan struct{}) error {
	select {
	case <-stop:
		return ErrStopped
	default:
	}
	if err := s.f.SetReadDeadline(time.Time{}); err != nil {
		return ErrClosed
	}
	waited := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-stop:
			s.f.SetReadDeadline(longAgo) // wakes the wait below
		case <-waited:
		}
	})
	err := s.rc.Read(readable)
	close(waited)
	wg.Wait()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ErrStopped
	default:
		return ErrClosed
	}
}

// readable reports whether fd has something for Recv: a datagram, or an
// error. Asked with poll(2) and no timeout, it never blocks.
func readable(fd uintptr) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	return err != nil || n > 0
}

// Dup returns a duplicate of the socket's descriptor without
// close-on-exec, for handing the socket to the next image of metad
// across a re-exec (FromFD takes it back there). The caller owns it; no
// child may be started between Dup and the exec, or it inherits it.
func (s *Socket) Dup() (int, error) {
	nfd := -1
	var err error
	if cerr := s.rc.Control(func(fd uintptr) { nfd, err = unix.Dup(int(fd)) }); cerr != nil {
		return -1, ErrClosed
	}
	if err != nil {
		return -1, fmt.Errorf("cannot duplicate notify socket %q: %w", s.addr, err)
	}
	return nfd, nil
}

// Close closes the socket, waking a Wait, and removes the socket file of
// a path socket. Duplicates made by Dup stay open. A second Close
// returns ErrClosed.
func (s *Socket) Close() error {
	if err := s.f.Close(); err != nil {
		return ErrClosed
	}
	if s.path != "" {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cannot remove notify socket: %w", err)
		}
	}
	return nil
}
