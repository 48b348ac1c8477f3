// Command metad is a daemon for controlling daemons; called as metac (by
// a symlink, or as "metad ctl") it is the control client.
//
// This file only dispatches on the program name, parses flags, builds the
// logger, wires the control servers to the daemon and returns exit
// codes; the logic lives in conffmt, initsys (directory init), supervise,
// supervise/daemon (metad's phases) and netctl.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
	"metad/netctl"
	"metad/netctl/metac"
	"metad/netctl/metrics"
	"metad/supervise"
	"metad/supervise/daemon"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

const exitUsage = 2 // a command-line mistake

func main() {
	initsys.Shim()         // returns at once unless metad runs as the exec shim of a child
	if daemon.Checking() { // the previous image asks whether this binary can take over
		daemon.AnswerCheck(os.Stdout)
		os.Exit(daemon.ExitOK)
	}
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	switch {
	case os.Args[0] == supervise.ShimArgv0:
		os.Exit(supervise.ExecShim(args))
	case name == "metac":
		os.Exit(metac.Main("metac", args, version, os.Stdout, os.Stderr))
	case len(args) > 0 && args[0] == "ctl":
		os.Exit(metac.Main("metad ctl", args[1:], version, os.Stdout, os.Stderr))
	default:
		os.Exit(runDaemon(args))
	}
}

// options are metad's command-line settings beyond daemon.Options.
type options struct {
	daemon.Options
	check, verbose, version bool
	port                    int
	keyFile                 string
	metrics                 string
	logFormat, logLevel     string
}

const usage = `usage: metad [-f FILE] [-n [-v]] [-s SOCKET] [-p PORT] [-k KEYFILE] [--stop-timeout DUR]
             [--log-format console|json] [--log-level LEVEL] [--metrics ADDR:PORT]
             [-g] [-- COMMAND [ARG...]]
       metad ctl ARGS...   (same as metac ARGS...)
`

// parseOptions parses metad's arguments. Any error but flag.ErrHelp is a
// command-line mistake, said in one line.
func parseOptions(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("metad", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.Conf, "f", cmp.Or(os.Getenv("METAD_CONF"), "/etc/metad.conf"), "the config `FILE` (default: $METAD_CONF, else /etc/metad.conf)")
	fs.BoolVar(&o.check, "n", false, "check the config and exit")
	fs.BoolVar(&o.verbose, "v", false, "with -n: print the effective config")
	fs.StringVar(&o.Socket, "s", netctl.DefaultSocket(), "the control `SOCKET` (default: $METAD_SOCKET, else /run/metad.sock as root, else $XDG_RUNTIME_DIR/metad.sock, else /tmp/metad-$UID.sock)")
	fs.IntVar(&o.port, "p", netctl.DefaultPort, fmt.Sprintf("the UDP `PORT` of network control (default: %d)", netctl.DefaultPort))
	fs.StringVar(&o.keyFile, "k", netctl.DefaultKeyFile, "the shared key of network control, in `KEYFILE` (default: "+netctl.DefaultKeyFile+"; none: no network control)")
	stop := fs.String("stop-timeout", "10s", "the grace `DUR` between the stop signal and SIGKILL (default: 10s)")
	fs.StringVar(&o.logFormat, "log-format", "", "the log `FORMAT`, console or json (default: console on a terminal, else json)")
	fs.StringVar(&o.logLevel, "log-level", "info", "the log `LEVEL`: trace, debug, info, warn or error (default: info; warn in command mode on a terminal)")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics at http://`ADDR:PORT`/metrics; ADDR is required, e.g. 127.0.0.1:9100 (default: none)")
	fs.BoolVar(&o.Group, "g", false, "command mode: forward signals to the command's process group")
	fs.BoolVar(&o.version, "V", false, "print the version and exit")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(os.Stdout, usage)
			fs.VisitAll(func(f *flag.Flag) {
				arg, what := flag.UnquoteUsage(f)
				name := strings.Repeat("-", min(len(f.Name), 2)) + f.Name // long options take two dashes
				fmt.Fprintf(os.Stdout, "  %s\n    \t%s\n", strings.TrimSpace(name+" "+arg), what)
			})
			return nil, flag.ErrHelp
		}
		return nil, err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if rest := fs.Args(); len(rest) > 0 {
		if dash := len(args) - len(rest); dash == 0 || args[dash-1] != "--" {
			return nil, fmt.Errorf("unexpected argument %q (put -- before a command)", rest[0])
		}
		o.Command = rest
	}
	// In command mode a missing default config is no config at all.
	o.ConfOptional = len(o.Command) > 0 && !given["f"] && os.Getenv("METAD_CONF") == ""
	// In command mode on a terminal, info lines would land in the middle
	// of the command's output: warnings and errors only, unless asked.
	if len(o.Command) > 0 && !given["log-level"] && isTerminal(2) {
		o.logLevel = "warn"
	}
	d, err := conffmt.ParseDuration(*stop)
	if err != nil {
		return nil, fmt.Errorf("invalid --stop-timeout %q: %v", *stop, err)
	}
	o.StopTimeout = d
	if o.port < 1 || o.port > 65535 {
		return nil, fmt.Errorf("invalid -p %d: not a port", o.port)
	}
	if err := metrics.CheckAddr(o.metrics); given["metrics"] && err != nil {
		return nil, fmt.Errorf("invalid --metrics %q: %v", o.metrics, err)
	}
	if o.logFormat != "" && o.logFormat != "console" && o.logFormat != "json" {
		return nil, fmt.Errorf("invalid --log-format %q: want console or json", o.logFormat)
	}
	if _, err := zerolog.ParseLevel(o.logLevel); err != nil || o.logLevel == "" {
		return nil, fmt.Errorf("invalid --log-level %q", o.logLevel)
	}
	return o, nil
}

// newLogger logs to stderr: console format on a terminal, JSON otherwise,
// unless format says which.
func newLogger(format, level string) zerolog.Logger {
	if format == "" {
		format = "json"
		if isTerminal(2) {
			format = "console"
		}
	}
	lvl, _ := zerolog.ParseLevel(level)
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00" // milliseconds: backoff delays show in the times
	if format == "json" {
		// Machine-read logs in UTC; this also spares reading the zone file.
		zerolog.TimestampFunc = func() time.Time { return time.Now().UTC() }
	}
	var w io.Writer = os.Stderr
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.DateTime, NoColor: !isTerminal(2), FormatPrepare: outputLine}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// outputLine shows a line of a watched program (an event with a stream
// field) in the console as "svc[pid] line".
func outputLine(ev map[string]any) error {
	if _, ok := ev["stream"]; ok {
		ev[zerolog.MessageFieldName] = fmt.Sprintf("%v[%v] %v", ev["svc"], ev["pid"], ev[zerolog.MessageFieldName])
		delete(ev, "svc")
		delete(ev, "pid")
		delete(ev, "stream")
	}
	return nil
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

func runDaemon(args []string) int {
	o, err := parseOptions(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return daemon.ExitOK
	case err != nil:
		fmt.Fprintf(os.Stderr, "metad: %v (see metad -h)\n", err)
		return exitUsage
	case o.version:
		fmt.Println("metad", version)
		return daemon.ExitOK
	case o.check:
		return check(o)
	}
	o.Version = version
	log := newLogger(o.logFormat, o.logLevel)
	return daemon.Main(o.Options, log, controlServers(o, log))
}

// check is metad -n: validate the config, print it with -v.
func check(o *options) int {
	svcs, warnings, err := conffmt.Check(o.Conf, &conffmt.Identity{UID: os.Geteuid(), GID: os.Getegid()}, nil)
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, w)
	}
	if err == nil && o.verbose {
		err = conffmt.Print(os.Stdout, svcs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return daemon.ExitFail
	}
	return daemon.ExitOK
}

// system is the daemon as control's System: control names metad's ends
// by its commands, initsys by what reboot(2) does.
type system struct{ *daemon.Daemon }

func (s system) Shutdown(f netctl.Final) {
	end := initsys.Poweroff // shutdown: exit, or power off as PID 1 of a machine
	switch f {
	case netctl.Reboot:
		end = initsys.Reboot
	case netctl.Halt:
		end = initsys.Halt
	}
	s.Daemon.Shutdown(end)
}

// controlServers returns what makes the control servers for the daemon
// (see netctl.Serve), with the metrics server beside them when asked for.
func controlServers(o *options, log zerolog.Logger) func(*daemon.Daemon, daemon.ControlFDs) (daemon.Control, error) {
	return func(d *daemon.Daemon, fds daemon.ControlFDs) (daemon.Control, error) {
		h := &netctl.Handler{Controller: d.Controller(), System: system{d}, Version: version, Machine: d.Machine()}
		h.Hostname, _ = os.Hostname()
		c := netctl.ServeConfig{Handler: h, Log: log, Socket: o.Socket, LocalFD: fds.Local,
			KeyFile: o.keyFile, Port: o.port, NetworkFD: fds.Network}
		if o.metrics != "" {
			m := &metrics.Server{Addr: o.metrics, Services: d.Controller(), Version: version, Log: log}
			c.Also = append(c.Also, m.Run)
		}
		s, err := netctl.Serve(c)
		if err != nil {
			return daemon.Control{}, err
		}
		ctl := daemon.Control{Local: s.Local, Close: s.Close}
		if s.Network != nil { // no typed nil in the interface
			ctl.Network = s.Network
		}
		return ctl, nil
	}
}
