// Package netctl is metad's control plane: the control protocol, the
// servers that answer it (the local socket, network control with its
// relay), and the client library that speaks it (docs/protocol.md).
//
// It owns the wire formats, replay protection, the command table and the
// servers' loops. It does not own services or metad's life: it acts
// through the Controller and System interfaces, which the supervisor and
// main implement, and it never starts processes. The metac command line
// is package netctl/metac, which uses the client library:
//
//	CallLocal   one request on the local socket
//	Call        one request to hosts, a broadcast or a relay (Target)
//	NewRequest  a request; CheckRequest, Commands: the command table
package netctl

import (
	"os"
	"strconv"
)

// DefaultPort is the UDP port of network control.
const DefaultPort = 611

// DefaultKeyFile holds the shared secret of network control.
const DefaultKeyFile = "/etc/metad.key"

// DefaultSocket is the local control socket: $METAD_SOCKET, else
// /run/metad.sock for root, else $XDG_RUNTIME_DIR/metad.sock, else
// /tmp/metad-$UID.sock.
func DefaultSocket() string {
	if s := os.Getenv("METAD_SOCKET"); s != "" {
		return s
	}
	if os.Geteuid() == 0 {
		return "/run/metad.sock"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return d + "/metad.sock"
	}
	return "/tmp/metad-" + strconv.Itoa(os.Geteuid()) + ".sock"
}
