// Command metad is a daemon for controlling daemons; called as metac (by
// a symlink, or as "metad ctl") it is the control client.
//
// This file only dispatches on the program name, parses flags, builds the
// logger and wires the packages together; the logic lives in conffmt,
// initsys (directory init), supervise and netctl.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
	"metad/netctl"
	"metad/netctl/metac"
	"metad/supervise"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses of metad itself (command mode exits with its command's).
const (
	exitOK     = 0
	exitFail   = 1
	exitUsage  = 2
	exitNoExec = 126 // command found but not executable
	exitNoCmd  = 127 // command not found
)

// shutdownSlack bounds how long a shutdown may take beyond the stop
// timeout: SIGKILL is final, so only reaping remains after it.
const shutdownSlack = 2 * time.Second

func main() {
	if os.Getenv(envReexecCheck) != "" {
		fmt.Println(answerCheck())
		fmt.Println(takesLine)
		os.Exit(exitOK)
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

// options are metad's command-line settings.
type options struct {
	conf        string
	confGiven   bool
	check       bool
	verbose     bool
	socket      string
	port        int
	keyFile     string
	stopTimeout time.Duration
	logFormat   string
	logLevel    string
	group       bool
	version     bool
	command     []string
}

// usageError is a command-line mistake: one line, and exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func parseOptions(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("metad", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.conf, "f", envOr("METAD_CONF", "/etc/metad.conf"), "config `FILE`")
	fs.BoolVar(&o.check, "n", false, "check the config and exit")
	fs.BoolVar(&o.verbose, "v", false, "with -n: print the effective config")
	fs.StringVar(&o.socket, "s", netctl.DefaultSocket(), "control `SOCKET`")
	fs.IntVar(&o.port, "p", netctl.DefaultPort, "network control `PORT`")
	fs.StringVar(&o.keyFile, "k", netctl.DefaultKeyFile, "network control `KEYFILE`")
	stop := fs.String("stop-timeout", "10s", "grace between the stop signal and SIGKILL (`DUR`)")
	fs.StringVar(&o.logFormat, "log-format", "", "console or json (default: console on a terminal)")
	fs.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.BoolVar(&o.group, "g", false, "command mode: forward signals to the command's process group")
	fs.BoolVar(&o.version, "V", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fmt.Fprintln(os.Stdout, "usage: metad [-f FILE] [-n [-v]] [-s SOCKET] [-p PORT] [-k KEYFILE] [--stop-timeout DUR]\n             [--log-format console|json] [--log-level LEVEL] [-g] [-- COMMAND [ARG...]]\n       metad ctl ARGS...   (same as metac ARGS...)")
			fs.PrintDefaults()
			return nil, flag.ErrHelp
		}
		return nil, &usageError{err.Error()}
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "f" {
			o.confGiven = true
		}
	})
	if os.Getenv("METAD_CONF") != "" {
		o.confGiven = true
	}
	rest := fs.Args()
	if len(rest) > 0 {
		dash := len(args) - len(rest)
		if dash == 0 || args[dash-1] != "--" {
			return nil, &usageError{fmt.Sprintf("unexpected argument %q (put -- before a command)", rest[0])}
		}
		o.command = rest
	}
	d, err := conffmt.ParseDuration(*stop)
	if err != nil {
		return nil, &usageError{fmt.Sprintf("invalid --stop-timeout %q: %v", *stop, err)}
	}
	o.stopTimeout = d
	if o.port < 1 || o.port > 65535 {
		return nil, &usageError{fmt.Sprintf("invalid -p %d: not a port", o.port)}
	}
	if o.logFormat != "" && o.logFormat != "console" && o.logFormat != "json" {
		return nil, &usageError{fmt.Sprintf("invalid --log-format %q: want console or json", o.logFormat)}
	}
	if _, err := zerolog.ParseLevel(o.logLevel); err != nil || o.logLevel == "" {
		return nil, &usageError{fmt.Sprintf("invalid --log-level %q", o.logLevel)}
	}
	return o, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
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

// defaultPath is the PATH metad uses when it has none: the kernel starts
// PID 1 without one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func runDaemon(args []string) int {
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", defaultPath)
	}
	o, err := parseOptions(args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "metad: %v (see metad -h)\n", err)
		return exitUsage
	}
	if o.version {
		fmt.Println("metad", version)
		return exitOK
	}
	if o.check {
		return check(o)
	}
	log := newLogger(o.logFormat, o.logLevel)
	return serve(o, log)
}

// check is metad -n: validate the config, print it with -v.
func check(o *options) int {
	svcs, err := conffmt.Load(o.conf, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitFail
	}
	if o.verbose {
		if err := conffmt.Print(os.Stdout, svcs); err != nil {
			fmt.Fprintf(os.Stderr, "metad: cannot print config: %v\n", err)
			return exitFail
		}
	}
	return exitOK
}

// loadConfig reads the config. In command mode a missing default config
// is no config at all; a named one must exist.
func loadConfig(o *options) ([]conffmt.Service, error) {
	svcs, err := conffmt.Load(o.conf, nil)
	if err != nil && len(o.command) > 0 && !o.confGiven && errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return svcs, err
}

// serve runs metad until shutdown and returns its exit status. As PID 1 of
// the machine it never returns.
func serve(o *options, log zerolog.Logger) int {
	// Take the state and the sockets handed to metad, then let no other
	// inherited descriptor reach a child.
	handed, err := takeHandover()
	if err != nil {
		log.Error().Err(err).Msg("cannot take over from the previous metad: starting afresh")
	}
	inherited, err := supervise.InheritListeners()
	if err != nil {
		log.Warn().Err(err).Msg("cannot use every inherited socket")
	}
	if err := initsys.CloseOnExecAll(); err != nil {
		log.Warn().Err(err).Msg("cannot mark inherited descriptors close-on-exec")
	}
	// Signals first: Go's default for TERM, INT and HUP is to exit, and
	// the control socket, once it exists, invites a quick SIGTERM.
	sigs := make(chan os.Signal, 64)
	initsys.Notify(sigs)
	reaper := initsys.NewReaper(log)

	pid1 := os.Getpid() == 1
	machine := pid1 && initsys.MachineInit()
	if machine {
		if err := initsys.MountEssentials(); err != nil {
			log.Error().Err(err).Msg("cannot mount every essential filesystem")
		}
	}
	if !pid1 {
		if err := initsys.SetSubreaper(); err != nil {
			log.Warn().Err(err).Msg("cannot become a subreaper: orphans of services will not be reaped")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reaped := make(chan struct{})
	go func() {
		reaper.Run(ctx)
		close(reaped)
	}()

	mode := initsys.Config
	if len(o.command) > 0 {
		mode = initsys.Command
	}
	status, final := run(o, log, reaper, sigs, mode, machine, inherited, handed)

	if pid1 {
		ctx, cancel := context.WithTimeout(context.Background(), o.stopTimeout+shutdownSlack)
		if err := reaper.Drain(ctx, o.stopTimeout); err != nil {
			log.Error().Err(err).Msg("cannot end every process")
		}
		cancel()
	}
	if machine {
		log.Info().Stringer("action", final).Msg("system going down")
		err := initsys.Finish(final)
		log.Error().Err(err).Msg("cannot finish shutdown; staying up")
		select {} // PID 1 of a machine must never exit: the kernel would panic
	}
	cancel()
	<-reaped
	return status
}

// run loads the config, starts the services, the control servers and, in
// command mode, the command; handles events until shutdown; and stops
// everything. It returns the exit status and, for PID 1 of a machine,
// what to do last.
func run(o *options, log zerolog.Logger, reaper *initsys.Reaper, sigs <-chan os.Signal, mode initsys.Mode, machine bool, inherited *supervise.Inherited, handed *handover) (int, initsys.Final) {
	sup, err := supervise.New(supervise.Config{Log: log, Procs: reaper, StopTimeout: o.stopTimeout, Inherited: inherited})
	if err != nil {
		log.Error().Err(err).Msg("cannot start supervisor")
		return exitFail, initsys.Poweroff
	}
	var svcs []conffmt.Service
	if handed == nil {
		if svcs, err = loadConfig(o); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return exitFail, initsys.Poweroff
		}
	}
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	d := &daemon{
		o: o, log: log, sup: sup, reaper: reaper, exe: exe, mode: mode, machine: machine, sigs: sigs,
		finals: make(chan initsys.Final, 1), reexecs: make(chan struct{}, 1), cmdExit: make(chan initsys.Exit, 1),
	}
	ctx, stopControl := context.WithCancel(context.Background())
	controlFD, netFD := -1, -1
	if handed != nil {
		controlFD, netFD = handed.Control, handed.Network
	}
	waitControl, err := serveControl(ctx, o, log, sup, d, controlFD, netFD)
	defer func() {
		stopControl()
		waitControl() // the socket file is gone when metad exits
	}()
	if err != nil {
		log.Error().Err(err).Msg("cannot start control")
	}

	nsvcs := len(svcs)
	if handed != nil {
		if err := sup.Restore(handed.Services); err != nil {
			log.Warn().Err(err).Msg("cannot restore every instance")
		}
		instances, sockets := handed.Services.Counts()
		nsvcs = len(handed.Services.Services)
		log.Info().Int("instances", instances).Int("sockets", sockets).Msg("took over from the previous metad")
	} else if err := sup.Load(svcs); err != nil {
		log.Error().Err(err).Msg("cannot load services")
		return exitFail, initsys.Poweroff
	}
	inherited.CloseUnused()
	log.Info().Str("config", o.conf).Int("services", nsvcs).Str("version", version).Msg("metad started")

	status, final := exitOK, initsys.Poweroff
	switch {
	case mode == initsys.Command && handed != nil && handed.Command > 0:
		d.cmdPid = handed.Command
		if err := reaper.Adopt(d.cmdPid, func(e initsys.Exit) { d.cmdExit <- e }); err != nil {
			log.Error().Err(err).Msg("cannot follow the command after re-exec")
			d.cmdPid = 0
		}
	case mode == initsys.Command:
		d.cmdPid, status = startCommand(o.command, reaper, d.cmdExit)
	}
	if mode == initsys.Config || d.cmdPid != 0 {
		status, final = d.wait()
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), o.stopTimeout+shutdownSlack)
	defer cancel()
	if err := sup.Shutdown(stopCtx); err != nil {
		log.Error().Err(err).Msg("cannot stop every service in time")
	}
	log.Info().Int("status", status).Msg("metad stopped")
	return status, final
}

// daemon is the running metad: the event loop of main, and the system
// actions (reload, shutdown) that control requests ask for.
type daemon struct {
	o       *options
	log     zerolog.Logger
	sup     *supervise.Supervisor
	reaper  *initsys.Reaper
	exe     string // metad's binary, for re-exec
	mode    initsys.Mode
	machine bool // PID 1 of the machine
	sigs    <-chan os.Signal
	finals  chan initsys.Final // shutdown requests from control
	reexecs chan struct{}      // re-exec requests from control
	local   *netctl.Local      // the control socket, handed over on re-exec
	netSrv  *netctl.Server     // network control, if on; its socket is handed over on re-exec
	// nextTakesNetwork says whether the binary CheckReexec checked last
	// takes over the network control socket.
	nextTakesNetwork atomic.Bool
	cmdPid           int
	cmdExit          chan initsys.Exit

	reloading sync.Mutex // one reload (or re-exec) at a time
}

// wait handles signals until it is time to shut down: a shutdown signal or
// request, or in command mode the command's exit. It returns the exit
// status and what PID 1 of a machine does last.
func (d *daemon) wait() (int, initsys.Final) {
	for {
		select {
		case e := <-d.cmdExit:
			d.log.Info().Int("pid", e.PID).Str("status", e.String()).Msg("command exited")
			return e.Code(), initsys.Poweroff
		case f := <-d.finals:
			d.log.Info().Stringer("action", f).Msg("shutting down on request")
			return exitOK, f
		case <-d.reexecs:
			if err := d.reexec(); err != nil {
				d.log.Error().Err(err).Msg("cannot re-execute: carrying on")
			}
		case sig := <-d.sigs:
			s := sig.(syscall.Signal)
			switch initsys.Policy(s, d.mode) {
			case initsys.Shutdown:
				d.log.Info().Stringer("signal", s).Msg("shutting down")
				if s == syscall.SIGINT {
					return exitOK, initsys.Reboot
				}
				return exitOK, initsys.Poweroff
			case initsys.Reload:
				if err := d.Reload(); err != nil {
					for _, line := range strings.Split(err.Error(), "\n") {
						d.log.Error().Msg(line)
					}
					d.log.Error().Str("config", d.o.conf).Msg("config not reloaded: nothing changed")
				}
			case initsys.Relay:
				if err := initsys.Forward(d.cmdPid, s, d.o.group); err != nil {
					d.log.Warn().Err(err).Stringer("signal", s).Msg("cannot forward signal")
				}
			default:
				d.log.Debug().Stringer("signal", s).Msg("ignored signal")
			}
		}
	}
}

// CheckReexec checks that the binary on disk can take over: it starts and
// speaks this image's state format.
func (d *daemon) CheckReexec() error {
	takes, err := checkBinary(d.reaper, d.exe)
	if err != nil {
		return fmt.Errorf("cannot re-execute %q: %w", d.exe, err)
	}
	d.nextTakesNetwork.Store(takes)
	return nil
}

// Reexec asks the event loop to execute the binary in place of this image,
// keeping every instance, socket and state. It does not wait.
func (d *daemon) Reexec() {
	select {
	case d.reexecs <- struct{}{}:
	default: // one is under way
	}
}

// Shutdown asks the event loop to stop everything and then do f. It does
// not wait.
func (d *daemon) Shutdown(f initsys.Final) {
	select {
	case d.finals <- f:
	default: // a shutdown is already under way
	}
}

// Reload re-reads the config file and applies the difference (see
// supervise.Supervisor.Reload). A file with any error changes nothing: the
// error lists every problem, one FILE:LINE:COL line each. Safe for
// concurrent use: reloads run one at a time.
func (d *daemon) Reload() error {
	d.reloading.Lock()
	defer d.reloading.Unlock()
	svcs, err := conffmt.Load(d.o.conf, nil)
	if err != nil {
		return err
	}
	diff := d.sup.Reload(svcs)
	d.log.Info().Str("config", d.o.conf).Strs("added", diff.Added).Strs("removed", diff.Removed).Strs("changed", diff.Changed).Msg("reloaded")
	return nil
}

// startCommand starts the main process of command mode. It returns its
// pid, or 0 and the exit status a shell would give when it cannot start.
// On a terminal where metad is in the foreground, the command gets the
// foreground process group, so that job control and Ctrl-C reach it.
func startCommand(argv []string, reaper *initsys.Reaper, exited chan<- initsys.Exit) (int, int) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "metad: cannot start %q: %v\n", argv[0], err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 0, exitNoCmd
		}
		return 0, exitNoExec
	}
	p := &initsys.Proc{Path: path, Argv: argv, Env: os.Environ(), Files: []int{0, 1, 2}}
	if initsys.InForeground(0) {
		p.Foreground = true
	} else {
		p.Setsid = true
	}
	pid, err := reaper.Spawn(p, func(e initsys.Exit) { exited <- e })
	if err != nil {
		fmt.Fprintf(os.Stderr, "metad: %v\n", err)
		return 0, initsys.StartCode(err)
	}
	return pid, exitOK
}
