// Package netctl is metad's control plane: the metac command line, the
// local control socket, and the network protocol.
package netctl

import (
	"flag"
	"fmt"
	"io"
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

// Main runs metac with args (without the program name) and returns its
// exit status. prog is how metac was called, for messages.
func Main(prog string, args []string, version string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	showVersion := fs.Bool("V", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprintf(stdout, "usage: %s [-h HOST[,HOST...]] [-b [BCAST]] [-r RELAY] [-p PORT] [-k KEYFILE] [-s SOCKET] [-t TIMEOUT] [--json] COMMAND [ARG...]\n", prog)
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v (see %s -h)\n", prog, err, prog)
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "metac", version)
		return 0
	}
	fmt.Fprintf(stderr, "%s: no command given (see %s -h)\n", prog, prog)
	return 2
}
