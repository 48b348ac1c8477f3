// Package metac is metad's control client as a command line: its options,
// help, messages, output and exit statuses (metac(8)).
//
// It owns none of the protocol: it builds a netctl.Request, sends it with
// netctl's client (the local socket, or the network) and prints what came
// back. It never talks to the supervisor or metad's internals.
package metac

import (
	"bufio"
	"context"
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
	"metad/netctl"
)

// Exit statuses of metac (SPEC §5).
const (
	exitOK       = 0
	exitFailed   = 1 // a host answered with an error
	exitUsage    = 2 // usage or local error
	exitNoAnswer = 3 // a named host did not answer, or nobody answered a broadcast
)

// localHost names the metad of the local socket in output.
const localHost = "local"

// Default waits of metac: a broadcast gathers replies for the whole
// time; requests to named hosts and the local socket end as soon as every
// answer is in.
const (
	defaultBroadcastWait = time.Second
	defaultHostWait      = 5 * time.Second
	defaultLocalWait     = 10 * time.Second
)

// helpCommand prints the help, like --help. It is metac's own: it never
// reaches metad.
const helpCommand = "help"

const usageText = `usage: %[1]s [OPTION...] COMMAND [ARG...] [OPTION...]
       %[1]s --version | --help

Options may come before or after the command; -- ends them.
Targets: the local metad (default, through SOCKET); -h HOST,...: those hosts
over the network; -b [BCAST]: every metad on the local subnets (or on BCAST);
-r RELAY,... -b: every metad on each RELAY's subnets, through RELAY.

  -h HOST[,HOST...]  hosts to send the command to (HOST or HOST:PORT)
  -b [BCAST]         broadcast (to every broadcast-capable interface, or BCAST)
  -r RELAY[,RELAY...]
                     with -b: have each RELAY broadcast on its own subnets
  --hosts FILE       the hosts of FILE, one a line (# comments): with -b, the
                     hosts expected to answer; else hosts to send to, as -h
  -p PORT            network control port (default %[2]d)
  -k KEYFILE         shared key of network control (default %[3]s)
  -s SOCKET          local control socket (default %[4]s)
  -t TIMEOUT         how long to wait for replies (default 1s with -b, 5s with -h,
                     10s locally); a broadcast gathers replies for all of it;
                     hosts that answered in part are asked again meanwhile;
                     start, stop, restart and wait: the whole wait for the
                     outcome (default: from the services' ready and stop
                     timeouts)
  --no-wait          start, stop, restart: return once metad has the request,
                     without waiting for the outcome
  --serial N         start, stop, restart, kill, enable, disable, reload,
                     reexec: on at most N hosts at a time (of -h or --hosts);
                     the next N only once the services are ready again
  --keep-going       with --serial: go on after a host that failed (exit 1)
  --ready-wait D     with --serial: how long a host's services may take to be
                     ready again before the rollout stops (default %[6]v)
  --summary          list across hosts: one line per service, how many hosts
                     have it ready, starting, in backoff, failed, and which not
  --json             one JSON object per host per line, errors included
  -V, --version      print metac's version and exit
  --help             print this help and exit

Commands:
%[5]s
Exit status: 0 all answered ok, 1 a host answered with an error or a service
did not have the outcome waited for, 2 usage or local error, 3 a host did not
answer (or nobody answered a broadcast).
`

// options is a parsed metac command line.
type options struct {
	hosts     []string
	hostsFile string // --hosts
	bcast     bool
	bcastTo   netip.Addr
	relays    []string
	port      int
	keyFile   string
	socket    string
	timeout   time.Duration // 0: the default for the target
	serial    int           // --serial: hosts at a time; 0: all at once
	keepGoing bool
	readyWait time.Duration
	summary   bool
	noWait    bool // --no-wait: start, stop, restart return once metad has the request
	json      bool
	version   bool
	help      bool
	cmd       string
	args      []string
}

// errNoCommand is the usage error of a command line without a command.
var errNoCommand = errors.New("no command given")

// parse parses metac's arguments. Options and the command's words may come
// in any order until "--", after which every word is the command's. An
// option takes its value as -x VALUE, -x=VALUE, or with two dashes; -b
// takes the next word as its address only when that word is an IP address.
// On an error, parse goes on to the end all the same, so that the options
// it returns say whether the error is to be written as JSON.
func parse(args []string) (*options, error) {
	o := &options{port: netctl.DefaultPort, keyFile: netctl.DefaultKeyFile, socket: netctl.DefaultSocket(), readyWait: defaultReadyWait}
	var words []string
	var first error
	fail := func(err error) {
		if first == nil {
			first = err
		}
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			words = append(words, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			words = append(words, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		switch name {
		case "h", "r", "p", "k", "s", "t", "hosts", "serial", "ready-wait":
			if !hasVal {
				if i+1 >= len(args) {
					fail(missingValue(name))
					continue
				}
				i++
				val = args[i]
			}
			if err := o.set(name, val); err != nil {
				fail(err)
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
					fail(fmt.Errorf("invalid -b %q: not an IPv4 address", val))
					continue
				}
				o.bcastTo = addr
			}
		case "json", "V", "version", "help", "keep-going", "summary", "no-wait":
			if hasVal {
				fail(fmt.Errorf("flag -%s takes no value", name))
				continue
			}
			switch name {
			case "json":
				o.json = true
			case "help":
				o.help = true
			case "keep-going":
				o.keepGoing = true
			case "summary":
				o.summary = true
			case "no-wait":
				o.noWait = true
			default:
				o.version = true
			}
		default:
			fail(fmt.Errorf("flag provided but not defined: %s", a))
		}
	}
	if first != nil {
		return o, first
	}
	if len(words) > 0 && words[0] == helpCommand {
		o.help = true
	}
	if o.help || o.version {
		return o, nil
	}
	if len(words) == 0 {
		return o, errNoCommand
	}
	o.cmd, o.args = words[0], words[1:]
	return o, o.check()
}

// missingValue is the error of an option given without its value.
func missingValue(name string) error {
	if name == "h" {
		return errors.New("flag needs an argument: -h HOST (help is --help)")
	}
	return fmt.Errorf("flag needs an argument: -%s", name)
}

// set sets the option name, which takes a value, to val.
func (o *options) set(name, val string) error {
	switch name {
	case "h":
		return addHosts(&o.hosts, "-h", val)
	case "r":
		return addHosts(&o.relays, "-r", val)
	case "hosts":
		o.hostsFile = val
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
	case "serial":
		n, err := strconv.Atoi(val)
		if err != nil || n < 1 {
			return fmt.Errorf("invalid --serial %q: want a number of hosts, 1 or more", val)
		}
		o.serial = n
	case "ready-wait":
		d, err := conffmt.ParseDuration(val)
		if err != nil || d <= 0 {
			return fmt.Errorf("invalid --ready-wait %q: want a duration such as 30s", val)
		}
		o.readyWait = d
	}
	return nil
}

// addHosts adds the hosts of a comma-separated list, given to flag, to
// hosts, each once.
func addHosts(hosts *[]string, flag, list string) error {
	for _, h := range strings.Split(list, ",") {
		if h = strings.TrimSpace(h); h == "" {
			return fmt.Errorf("invalid %s %q: empty host name", flag, list)
		}
		if !slices.Contains(*hosts, h) {
			*hosts = append(*hosts, h)
		}
	}
	return nil
}

// check validates the combination of targets and the command.
func (o *options) check() error {
	switch {
	case len(o.hosts) > 0 && o.bcast:
		return errors.New("-h and -b cannot be used together")
	case len(o.relays) > 0 && !o.bcast:
		return errors.New("-r RELAY needs -b: the relay broadcasts the request")
	case len(o.relays) > 0 && o.bcastTo.IsValid():
		return errors.New("-r RELAY takes -b without an address: the relay broadcasts on its own subnets")
	}
	if err := checkCommand(o.cmd, o.args); err != nil {
		if errors.Is(err, netctl.ErrUnknownCommand) {
			return unknownCommand(o.cmd)
		}
		return err
	}
	if o.network() && localOnly(o.cmd) {
		return fmt.Errorf("%s works on the local socket only: run it on the host, without -h or -b", o.cmd)
	}
	switch {
	case o.serial > 0 && !slices.Contains(serialCommands, o.cmd):
		return fmt.Errorf("--serial rolls out %s, not %s", strings.Join(serialCommands, ", "), o.cmd)
	case o.serial > 0 && len(o.hosts) == 0 && o.hostsFile == "":
		return errors.New("--serial needs the hosts to roll out to: -h HOST,... or --hosts FILE")
	case o.serial > 0 && len(o.relays) > 0:
		return errors.New("--serial sends to each host itself: it takes no -r")
	case o.keepGoing && o.serial == 0:
		return errors.New("--keep-going goes with --serial")
	case o.summary && !slices.Contains(summaryCommands, o.cmd):
		return fmt.Errorf("--summary summarizes %s, not %s", strings.Join(summaryCommands, " and "), o.cmd)
	case o.noWait && !slices.Contains(waitCommands, o.cmd):
		return fmt.Errorf("--no-wait goes with %s, not %s", strings.Join(waitCommands, ", "), o.cmd)
	case o.noWait && o.serial > 0:
		return errors.New("--no-wait and --serial cannot be used together: a rollout waits for each batch")
	case o.cmd == waitCommand && o.bcast:
		return errors.New("wait asks the hosts it waits on: -h HOST,... or --hosts FILE, not -b")
	}
	return nil
}

// checkCommand validates a command and its arguments: metac's own wait,
// or one metad carries out.
func checkCommand(cmd string, args []string) error {
	if cmd == waitCommand {
		if len(args) == 0 {
			return fmt.Errorf("usage: %s %s", waitCommand, waitArgs)
		}
		return nil
	}
	return netctl.CheckRequest(cmd, args)
}

// follows reports whether metac waits for the outcome of the command on
// each service: start, stop and restart unless --no-wait, on the local
// socket or named hosts (a broadcast does not know beforehand who
// answers; a rollout waits its own way), and wait.
func (o *options) follows() bool {
	if o.cmd == waitCommand {
		return true
	}
	return slices.Contains(waitCommands, o.cmd) && !o.noWait && !o.bcast && o.serial == 0
}

// commandNames returns every command metac knows, in order.
func commandNames() []string {
	names := []string{helpCommand, waitCommand}
	for _, c := range netctl.Commands() {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	return names
}

// unknownCommand is the error of a command that is not one: with the
// command meant, when the word is a likely typo of one, else with every
// command.
func unknownCommand(cmd string) error {
	if s := suggest(cmd, commandNames()); s != "" {
		return fmt.Errorf("unknown command %q (did you mean %q?)", cmd, s)
	}
	return fmt.Errorf("unknown command %q (commands: %s)", cmd, strings.Join(commandNames(), ", "))
}

// localOnly reports whether metad serves cmd on the local socket only.
func localOnly(cmd string) bool {
	return slices.ContainsFunc(netctl.Commands(), func(c netctl.CommandInfo) bool { return c.Name == cmd && c.LocalOnly })
}

// network reports whether the command goes over the network.
func (o *options) network() bool { return len(o.hosts) > 0 || o.hostsFile != "" || o.bcast }

// wait returns how long to wait for replies.
func (o *options) wait() time.Duration {
	if o.timeout > 0 {
		return o.timeout
	}
	return o.defaultWait()
}

// defaultWait returns how long to wait for replies without -t.
func (o *options) defaultWait() time.Duration {
	switch {
	case o.bcast:
		return defaultBroadcastWait
	case len(o.hosts) > 0 || o.hostsFile != "":
		return defaultHostWait
	default:
		return defaultLocalWait
	}
}

// target returns where a network command goes.
func (o *options) target() netctl.Target {
	return netctl.Target{Hosts: o.hosts, Broadcast: o.bcast, BroadcastTo: o.bcastTo, Relays: o.relays, Port: o.port, Timeout: o.wait()}
}

// Main runs metac with args (without the program name) and returns its
// exit status. prog is how metac was called ("metac", "metad ctl"), for
// messages; version is metac's own. Without arguments it writes the help
// to stderr and returns the usage status: a script that lost its command
// fails, and its output is not mistaken for data.
func Main(prog string, args []string, version string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		writeHelp(stderr, prog)
		return exitUsage
	}
	o, err := parse(args)
	// Tables are written cell by cell: one write(2) per cell unbuffered.
	bw := bufio.NewWriterSize(stdout, 64<<10)
	defer bw.Flush()
	out := &printer{prog: prog, cmd: o.cmd, json: o.json, stdout: bw, stderr: stderr}
	switch {
	case err != nil:
		return out.usage(err)
	case o.help:
		writeHelp(bw, prog)
		return exitOK
	case o.version:
		fmt.Fprintln(bw, "metac", version)
		return exitOK
	}
	if !o.network() && o.follows() {
		return (&follower{o: o, out: out, call: localCaller(o.socket), hosts: []string{localHost}, failHost: localHost}).run()
	}
	req := netctl.NewRequest(o.cmd, o.args...)
	if !o.network() {
		r, err := netctl.CallLocal(o.socket, req, o.wait())
		if err != nil {
			return out.fail(localHost, fmt.Sprintf("cannot reach metad at %s: %v", o.socket, err))
		}
		return out.print([]netctl.Answer{{Host: localHost, Reply: r}})
	}
	return runNet(o, req, out)
}

// runNet sends req over the network as o says, prints the answers with
// out, and returns metac's exit status.
func runNet(o *options, req netctl.Request, out *printer) int {
	var expected []string // --hosts with -b
	if o.hostsFile != "" {
		hosts, err := readHostsFile(o.hostsFile)
		if err != nil {
			return out.fail("", err.Error())
		}
		if o.bcast {
			expected = hosts
		} else {
			for _, h := range hosts {
				if !slices.Contains(o.hosts, h) {
					o.hosts = append(o.hosts, h)
				}
			}
			if len(o.hosts) == 0 {
				return out.fail("", fmt.Sprintf("no hosts in %s", o.hostsFile))
			}
		}
	}
	key, err := netctl.LoadKey(o.keyFile)
	if err != nil {
		return out.fail("", err.Error())
	}
	if o.follows() {
		return (&follower{o: o, out: out, call: netCaller(key, o.port), hosts: o.hosts}).run()
	}
	if o.serial > 0 {
		hosts := o.hosts
		if o.bcast {
			hosts = expected
		}
		return (&rollout{o: o, key: key, req: req, out: out}).run(hosts)
	}
	t := o.target()
	if len(expected) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), lookupWait)
		for _, h := range expected {
			t.Expect = append(t.Expect, lookupHost(ctx, stripPort(h))...)
		}
		cancel()
	}
	got, err := netctl.Call(key, t, req)
	if err != nil {
		return out.fail("", err.Error())
	}
	answers := got.Answers
	if len(expected) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), lookupWait)
		defer cancel()
		addrsOf := func(h string) []netip.Addr { return lookupHost(ctx, h) }
		for _, h := range missingHosts(expected, answers, addrsOf) {
			answers = append(answers, netctl.Answer{Host: h, Err: "no answer"})
		}
	}
	out.multi = o.bcast || len(o.hosts) > 1
	var status int
	if o.summary {
		status = out.printSummary(answers)
	} else {
		status = out.print(answers)
	}
	for _, p := range got.Problems {
		fmt.Fprintf(out.stderr, "%s: %s\n", out.prog, p)
		status = exitNoAnswer
	}
	if o.bcast && len(got.Answers) == 0 {
		fmt.Fprintf(out.stderr, "%s: no answer to the broadcast within %v\n", out.prog, t.Timeout)
		status = exitNoAnswer
	}
	return status
}

// writeHelp writes the usage text with every command.
func writeHelp(w io.Writer, prog string) {
	fmt.Fprintf(w, usageText, prog, netctl.DefaultPort, netctl.DefaultKeyFile, netctl.DefaultSocket(), commandHelp(), strings.TrimSuffix(defaultReadyWait.String(), "0s"))
}

// commandHelp lists the commands and their arguments.
func commandHelp() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, c := range netctl.Commands() {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.Name, c.Args, c.What)
	}
	fmt.Fprintf(tw, "  %s %s\t%s\n", waitCommand, waitArgs, "wait until the services are ready (metac's own)")
	fmt.Fprintf(tw, "  %s\t%s\n", helpCommand, "print this help (metac's own)")
	tw.Flush()
	return b.String()
}
