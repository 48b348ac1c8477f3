// Package netctl is metad's control plane: the metac command line, the
// local control socket, and the authenticated network protocol with
// broadcast and relay (docs/protocol.md).
//
// It owns the wire formats, replay protection and the servers' loops. It
// does not own services or metad's life: it acts through the Controller
// and System interfaces, which the supervisor and main implement, and it
// never starts processes.
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
