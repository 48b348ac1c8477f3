package netctl

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"metad/conffmt"
)

// Exit statuses of metac (SPEC §5).
const (
	exitOK        = 0
	exitFailed    = 1 // a host answered with an error
	exitUsage     = 2 // usage or local error
	exitNoAnswer  = 3 // a named host did not answer, or nobody answered a broadcast
	localHostName = "local"
)

// Default waits of metac: a broadcast gathers replies for the whole
// time; requests to named hosts and the local socket end as soon as every
// answer is in.
const (
	defaultBroadcastWait = time.Second
	defaultHostWait      = 5 * time.Second
	defaultLocalWait     = 10 * time.Second
)

const usageText = `usage: %[1]s [-h HOST[,HOST...]] [-b [BCAST]] [-r RELAY] [-p PORT] [-k KEYFILE] [-s SOCKET]
       %[2]*[3]s [-t TIMEOUT] [--json] COMMAND [ARG...]
       %[1]s -V | --help

Targets: the local metad (default, through SOCKET); -h HOST,...: those hosts
over the network; -b [BCAST]: every metad on the local subnets (or on BCAST);
-r RELAY -b: every metad on RELAY's subnets, through RELAY.

  -h HOST[,HOST...]  hosts to send the command to (HOST or HOST:PORT)
  -b [BCAST]         broadcast (to every broadcast-capable interface, or BCAST)
  -r RELAY           with -b: have RELAY broadcast on its own subnets
  -p PORT            network control port (default %[4]d)
  -k KEYFILE         shared key of network control (default %[5]s)
  -s SOCKET          local control socket (default %[6]s)
  -t TIMEOUT         how long to wait for replies (default 1s with -b, 5s with -h,
                     10s locally); a broadcast gathers replies for all of it
  --json             one JSON object per host per line
  -V                 print the version and exit

Commands:
%[7]s
Exit status: 0 all answered ok, 1 a host answered with an error, 2 usage or
local error, 3 a host did not answer (or nobody answered a broadcast).
`

// cliOptions is a parsed metac command line.
type cliOptions struct {
	hosts   []string
	bcast   bool
	bcastTo netip.Addr
	relay   string
	port    int
	keyFile string
	socket  string
	timeout time.Duration // 0: the default for the target
	json    bool
	version bool
	help    bool
	cmd     string
	args    []string
}

// parseCLI parses metac's arguments. Flags come before the command, as
// -x VALUE, -x=VALUE or with two dashes; -b takes the next word as its
// address only when that word is an IP address.
func parseCLI(args []string) (*cliOptions, error) {
	o := &cliOptions{port: DefaultPort, keyFile: DefaultKeyFile, socket: DefaultSocket()}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		switch name {
		case "h", "r", "p", "k", "s", "t":
			if !hasVal {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("flag needs an argument: -%s", name)
				}
				i++
				val = args[i]
			}
			if err := o.set(name, val); err != nil {
				return nil, err
			}
		case "b":
			o.bcast = true
			if !hasVal && i+1 < len(args) {
				if _, err := netip.ParseAddr(args[i+1]); err == nil {
					i++
					val, hasVal = args[i], true
				}
			}
			if hasVal {
				addr, err := netip.ParseAddr(val)
				if err != nil || !addr.Is4() {
					return nil, fmt.Errorf("invalid -b %q: not an IPv4 address", val)
				}
				o.bcastTo = addr
			}
		case "json", "V", "help":
			if hasVal {
				return nil, fmt.Errorf("flag -%s takes no value", name)
			}
			switch name {
			case "json":
				o.json = true
			case "V":
				o.version = true
			default:
				o.help = true
			}
		default:
			return nil, fmt.Errorf("flag provided but not defined: %s", a)
		}
	}
	if o.help || o.version {
		return o, nil
	}
	if i >= len(args) {
		return nil, errors.New("no command given")
	}
	o.cmd, o.args = args[i], args[i+1:]
	if err := o.check(); err != nil {
		return nil, err
	}
	return o, nil
}

// set sets the flag name, which takes a value, to val.
func (o *cliOptions) set(name, val string) error {
	switch name {
	case "h":
		for _, h := range strings.Split(val, ",") {
			if h = strings.TrimSpace(h); h == "" {
				return fmt.Errorf("invalid -h %q: empty host name", val)
			}
			if !slices.Contains(o.hosts, h) {
				o.hosts = append(o.hosts, h)
			}
		}
	case "r":
		o.relay = val
	case "p":
		p, err := strconv.Atoi(val)
		if err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("invalid -p %q: not a port", val)
		}
		o.port = p
	case "k":
		o.keyFile = val
	case "s":
		o.socket = val
	case "t":
		d, err := conffmt.ParseDuration(val)
		if err != nil || d <= 0 {
			return fmt.Errorf("invalid -t %q: want a duration such as 2s or 500ms", val)
		}
		o.timeout = d
	}
	return nil
}

// check validates the combination of targets and the command.
func (o *cliOptions) check() error {
	switch {
	case len(o.hosts) > 0 && o.bcast:
		return errors.New("-h and -b cannot be used together")
	case o.relay != "" && !o.bcast:
		return errors.New("-r RELAY needs -b: the relay broadcasts the request")
	case o.relay != "" && o.bcastTo.IsValid():
		return errors.New("-r RELAY takes -b without an address: the relay broadcasts on its own subnets")
	}
	return checkRequest(o.cmd, o.args)
}

// network reports whether the command goes over the network.
func (o *cliOptions) network() bool { return len(o.hosts) > 0 || o.bcast }

// wait returns how long to wait for replies.
func (o *cliOptions) wait() time.Duration {
	switch {
	case o.timeout > 0:
		return o.timeout
	case o.bcast:
		return defaultBroadcastWait
	case len(o.hosts) > 0:
		return defaultHostWait
	default:
		return defaultLocalWait
	}
}

// Main runs metac with args (without the program name) and returns its
// exit status. prog is how metac was called, for messages.
func Main(prog string, args []string, version string, stdout, stderr io.Writer) int {
	o, err := parseCLI(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v (see %s --help)\n", prog, err, prog)
		return exitUsage
	}
	if o.help {
		fmt.Fprintf(stdout, usageText, prog, len(prog), "", DefaultPort, DefaultKeyFile, DefaultSocket(), commandHelp())
		return exitOK
	}
	if o.version {
		fmt.Fprintln(stdout, "metac", version)
		return exitOK
	}
	req := Request{Version: protocolVersion, Command: o.cmd, Args: o.args}
	// Tables are written cell by cell: one write(2) per cell unbuffered.
	bw := bufio.NewWriterSize(stdout, 64<<10)
	defer bw.Flush()
	out := &printer{prog: prog, cmd: o.cmd, json: o.json, stdout: bw, stderr: stderr}
	if !o.network() {
		r, err := callLocal(o.socket, req, o.wait())
		if err != nil {
			fmt.Fprintf(stderr, "%s: cannot reach metad at %s: %v\n", prog, o.socket, err)
			return exitUsage
		}
		return out.print([]result{{host: localHostName, reply: r}})
	}
	key, err := LoadKey(o.keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return exitUsage
	}
	t := netTarget{hosts: o.hosts, bcast: o.bcast, bcastTo: o.bcastTo, relay: o.relay, port: o.port, timeout: o.wait()}
	g, err := callNet(key, t, req)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return exitUsage
	}
	results := g.results(t)
	out.multi = o.bcast || len(o.hosts) > 1
	status := out.print(results)
	if p := g.relayProblem(); p != "" {
		fmt.Fprintf(stderr, "%s: %s: %s\n", prog, o.relay, p)
		status = exitNoAnswer
	}
	if o.bcast && len(results) == 0 {
		fmt.Fprintf(stderr, "%s: no answer to the broadcast within %v\n", prog, t.timeout)
		status = exitNoAnswer
	}
	return status
}

// commandHelp lists the commands and their arguments.
func commandHelp() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, n := range commandNames() {
		fmt.Fprintf(tw, "  %s %s\t%s\n", n, commands[n].args, commands[n].what)
	}
	tw.Flush()
	return b.String()
}
