package supervise

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Endpoint is the local address of a listening TCP socket. The zero Addr
// means every address, IPv4 and IPv6.
type Endpoint struct {
	Addr netip.Addr
	Port int
}

func (e Endpoint) String() string {
	if !e.Addr.IsValid() {
		return "*:" + strconv.Itoa(e.Port)
	}
	return netip.AddrPortFrom(e.Addr, uint16(e.Port)).String()
}

// listen binds a listening TCP socket on e with the given backlog. The
// descriptor is close-on-exec and blocking; callers that wait on it use
// poll(2) with a cancel descriptor, so that the very same descriptor can be
// handed to a listener's program, which may expect blocking accepts.
func listen(e Endpoint, backlog int) (int, error) {
	family := unix.AF_INET6
	if e.Addr.Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("cannot create socket for %s: %w", e, err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("cannot %s %s: %w", what, e, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("set SO_REUSEADDR on", err)
	}
	var sa unix.Sockaddr
	switch {
	case !e.Addr.IsValid():
		// Every address: one dual-stack IPv6 socket.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return fail("make dual-stack", err)
		}
		sa = &unix.SockaddrInet6{Port: e.Port}
	case e.Addr.Is4():
		sa = &unix.SockaddrInet4{Port: e.Port, Addr: e.Addr.As4()}
	default:
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail("make IPv6-only", err)
		}
		sa = &unix.SockaddrInet6{Port: e.Port, Addr: e.Addr.As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fail("listen on", err)
	}
	return fd, nil
}

// sockEndpoint returns the local endpoint of a listening TCP socket, as a
// service would name it: a dual-stack wildcard is the zero Addr.
func sockEndpoint(fd int) (Endpoint, bool) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return Endpoint{}, false
	}
	if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on == 0 {
		return Endpoint{}, false
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return Endpoint{}, false
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return Endpoint{Addr: netip.AddrFrom4(a.Addr), Port: a.Port}, true
	case *unix.SockaddrInet6:
		addr := netip.AddrFrom16(a.Addr)
		if addr.IsUnspecified() {
			if v6only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err == nil && v6only == 0 {
				return Endpoint{Port: a.Port}, true
			}
		}
		return Endpoint{Addr: addr, Port: a.Port}, true
	default:
		return Endpoint{}, false
	}
}

// sockaddrIP returns the address and port of sa, with IPv4-mapped IPv6
// addresses shown as IPv4, as tcpserver does.
func sockaddrIP(sa syscall.Sockaddr) (netip.Addr, int) {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrFrom4(a.Addr), a.Port
	case *syscall.SockaddrInet6:
		return netip.AddrFrom16(a.Addr).Unmap(), a.Port
	default:
		return netip.Addr{}, 0
	}
}

// Inherited holds listening sockets metad was given at start (systemd's
// LISTEN_FDS protocol, or a metad that re-executed itself), by endpoint.
// A service whose endpoint matches takes the socket instead of binding.
type Inherited struct {
	fds map[Endpoint]int
}

// InheritListeners takes the sockets described by LISTEN_PID, LISTEN_FDS
// and LISTEN_FDNAMES, if they are meant for this process, and removes those
// variables from the environment so that no child sees them. Descriptors
// that are not listening TCP sockets are closed.
func InheritListeners() (*Inherited, error) {
	in := &Inherited{fds: make(map[Endpoint]int)}
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if pid == "" || fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return in, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > 1024 {
		return in, fmt.Errorf("cannot use LISTEN_FDS=%q: not a count", fds)
	}
	var errs []error
	for fd := 3; fd < 3+n; fd++ {
		unix.CloseOnExec(fd)
		e, ok := sockEndpoint(fd)
		if !ok {
			unix.Close(fd)
			errs = append(errs, fmt.Errorf("cannot use inherited descriptor %d: not a listening TCP socket", fd))
			continue
		}
		if err := unix.SetNonblock(fd, false); err != nil {
			errs = append(errs, fmt.Errorf("cannot make inherited socket %s blocking: %w", e, err))
		}
		in.fds[e] = fd
	}
	return in, errors.Join(errs...)
}

// take removes and returns the inherited socket for e, or -1.
func (in *Inherited) take(e Endpoint) int {
	if in == nil {
		return -1
	}
	fd, ok := in.fds[e]
	if !ok {
		return -1
	}
	delete(in.fds, e)
	return fd
}

// CloseUnused closes every inherited socket no service took.
func (in *Inherited) CloseUnused() {
	if in == nil {
		return
	}
	for e, fd := range in.fds {
		unix.Close(fd)
		delete(in.fds, e)
	}
}

// endpoint is the service's listening address.
func (sv *service) endpoint() Endpoint {
	return Endpoint{Addr: sv.conf.Addr, Port: sv.conf.Port}
}

// openSocket gets a listener service's listening socket: an inherited one
// that matches its endpoint, or a new one.
func (sv *service) openSocket() (int, error) {
	if fd := sv.inheritedFD; fd >= 0 {
		sv.inheritedFD = -1
		sv.log.Info().Stringer("addr", sv.endpoint()).Msg("using inherited socket")
		return fd, nil
	}
	return listen(sv.endpoint(), sv.conf.Backlog)
}

// closeFD closes a descriptor of metad's; a negative one (a fake
// connection in tests) is left alone.
func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// netipAddrPort formats a client as ADDR:PORT.
func netipAddrPort(r remote) string {
	return netip.AddrPortFrom(r.addr, uint16(r.port)).String()
}

// parseRemote reads what netipAddrPort wrote; a bad one is the zero remote.
func parseRemote(s string) remote {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return remote{}
	}
	return remote{addr: ap.Addr(), port: int(ap.Port())}
}
