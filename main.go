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
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
	"metad/netctl"
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
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	switch {
	case name == "metac":
		os.Exit(netctl.Main("metac", args, version, os.Stdout, os.Stderr))
	case len(args) > 0 && args[0] == "ctl":
		os.Exit(netctl.Main("metad ctl", args[1:], version, os.Stdout, os.Stderr))
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
	if _, ok := os.LookupEnv("METAD_CONF"); ok {
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
	var w io.Writer = os.Stderr
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.DateTime, NoColor: !isTerminal(2)}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

func runDaemon(args []string) int {
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
	// Signals first: Go's default for TERM, INT and HUP is to exit.
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
	status, final := run(o, log, reaper, sigs, mode)

	if pid1 {
		reaper.Drain(context.Background(), o.stopTimeout)
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

// run loads the config, starts the services (and the command), handles
// signals until shutdown, and stops everything. It returns the exit status
// and, for PID 1 of a machine, what to do last.
func run(o *options, log zerolog.Logger, reaper *initsys.Reaper, sigs <-chan os.Signal, mode initsys.Mode) (int, initsys.Final) {
	svcs, err := loadConfig(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitFail, initsys.Poweroff
	}
	sup, err := supervise.New(supervise.Config{Log: log, Procs: reaper, StopTimeout: o.stopTimeout})
	if err != nil {
		log.Error().Err(err).Msg("cannot start supervisor")
		return exitFail, initsys.Poweroff
	}
	if err := sup.Load(svcs); err != nil {
		log.Error().Err(err).Msg("cannot load services")
		return exitFail, initsys.Poweroff
	}
	log.Info().Str("config", o.conf).Int("services", len(svcs)).Str("version", version).Msg("metad started")

	status, final := exitOK, initsys.Poweroff
	cmdPid, cmdExit := 0, make(chan initsys.Exit, 1)
	if mode == initsys.Command {
		cmdPid, status = startCommand(o.command, reaper, cmdExit)
	}
	if mode == initsys.Config || cmdPid != 0 {
		status, final = wait(o, log, sigs, mode, cmdPid, cmdExit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.stopTimeout+shutdownSlack)
	defer cancel()
	if err := sup.Shutdown(ctx); err != nil {
		log.Error().Err(err).Msg("cannot stop every service in time")
	}
	log.Info().Int("status", status).Msg("metad stopped")
	return status, final
}

// wait handles signals until it is time to shut down: a shutdown signal,
// or in command mode the command's exit. It returns the exit status and
// what PID 1 of a machine does last.
func wait(o *options, log zerolog.Logger, sigs <-chan os.Signal, mode initsys.Mode, cmdPid int, cmdExit <-chan initsys.Exit) (int, initsys.Final) {
	for {
		select {
		case e := <-cmdExit:
			log.Info().Int("pid", e.PID).Str("status", e.String()).Msg("command exited")
			return e.Code(), initsys.Poweroff
		case sig := <-sigs:
			s := sig.(syscall.Signal)
			switch initsys.Policy(s, mode) {
			case initsys.Shutdown:
				log.Info().Stringer("signal", s).Msg("shutting down")
				if s == syscall.SIGINT {
					return exitOK, initsys.Reboot
				}
				return exitOK, initsys.Poweroff
			case initsys.Reload:
				reload(o, log)
			case initsys.Forward:
				if err := initsys.Forward(cmdPid, s, o.group); err != nil {
					log.Warn().Err(err).Stringer("signal", s).Msg("cannot forward signal")
				}
			default:
				log.Debug().Stringer("signal", s).Msg("ignored signal")
			}
		}
	}
}

// startCommand starts the main process of command mode. It returns its
// pid, or 0 and the exit status a shell would give when it cannot start.
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
	if isTerminal(0) {
		p.Foreground = true
	} else {
		p.Setsid = true
	}
	pid, err := reaper.Spawn(p, func(e initsys.Exit) { exited <- e })
	if err != nil {
		fmt.Fprintf(os.Stderr, "metad: %v\n", err)
		if errors.Is(err, syscall.ENOENT) {
			return 0, exitNoCmd
		}
		return 0, exitNoExec
	}
	return pid, exitOK
}

// reload re-reads the config on SIGHUP. Applying a changed config to
// running services is not done yet: a changed file is checked and its
// errors logged, and the services keep their loaded settings.
func reload(o *options, log zerolog.Logger) {
	if _, err := conffmt.Load(o.conf, nil); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			log.Error().Msg(line)
		}
		return
	}
	log.Warn().Str("config", o.conf).Msg("config is valid; applying changes needs a restart of metad")
}
