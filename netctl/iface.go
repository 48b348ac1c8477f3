package netctl

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// The receive buffer asked for on the sockets that gather replies: a
// reply of hundreds of datagrams, from many hosts at once, must not
// overflow it before metac reads it. It grows with the hosts expected,
// each allowed a reply of recvPerHost, up to maxRecvBuffer.
const (
	minRecvBuffer = 8 << 20
	maxRecvBuffer = 256 << 20
	recvPerHost   = 64 << 10
)

// recvBufferFor returns the receive buffer for gathering the replies of
// hosts hosts.
func recvBufferFor(hosts int) int {
	return min(max(minRecvBuffer, hosts*recvPerHost), maxRecvBuffer)
}

// BroadcastAddrs returns the IPv4 broadcast address of every subnet of
// every interface that is up and can broadcast, without duplicates.
func BroadcastAddrs() ([]netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("cannot list network interfaces: %w", err)
	}
	var out []netip.Addr
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagBroadcast == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("cannot list the addresses of %q: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			if b, ok := broadcastOf(a); ok && !slices.Contains(out, b) {
				out = append(out, b)
			}
		}
	}
	return out, nil
}

// broadcastOf returns the broadcast address of an interface address: an
// IPv4 subnet with at least two host addresses.
func broadcastOf(a net.Addr) (netip.Addr, bool) {
	ipn, ok := a.(*net.IPNet)
	if !ok {
		return netip.Addr{}, false
	}
	ip4, mask := ipn.IP.To4(), ipn.Mask
	if ip4 == nil || len(mask) != net.IPv4len {
		return netip.Addr{}, false
	}
	if ones, _ := mask.Size(); ones > 30 {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i := range b {
		b[i] = ip4[i] | ^mask[i]
	}
	return netip.AddrFrom4(b), true
}

// listenGather opens a UDP socket on an ephemeral port, with a large
// receive buffer, for sending requests and gathering the replies; with
// broadcast, it may send to broadcast addresses. recvBuffer is the size of
// its receive buffer, in bytes.
func listenGather(network string, broadcast bool, recvBuffer int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if broadcast {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
			}
			// RCVBUFFORCE passes the system's limit, for root; others
			// get what the limit allows.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBuffer) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, recvBuffer)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, ":0")
	if err != nil {
		return nil, fmt.Errorf("cannot open a UDP socket: %w", err)
	}
	return pc.(*net.UDPConn), nil
}
