package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"metad/conffmt"
	"metad/init"
	"metad/supervise"
)

// Bounds of the phases. They are deadlines: each wait ends as soon as
// what it waits for has happened.
const (
	// shutdownSlack is how long a shutdown may take beyond the stop
	// timeout: SIGKILL is final, so only reaping remains after it. The
	// end of it is kept for the supervisor to return once its deadline
	// has passed (returnGrace) and for control to close (closeGrace).
	shutdownSlack = 2 * time.Second
	returnGrace   = 250 * time.Millisecond
	closeGrace    = 500 * time.Millisecond
	// stopQuiesce bounds the wait, when the shutdown begins, for the
	// control requests being answered; it counts in the shutdown's bound.
	stopQuiesce = time.Second
	// quiesceTimeout bounds the same wait before a re-exec; a request
	// still unanswered after it is cut off by the exec.
	quiesceTimeout = 5 * time.Second
	// closeLimit bounds the wait for the control servers to close when
	// metad cannot start.
	closeLimit = time.Second
	// probeTimeout bounds the connection to a control socket that may
	// belong to another metad.
	probeTimeout = time.Second
)

// Exit statuses of metad itself; command mode exits with its command's.
const (
	ExitOK     = 0
	ExitFail   = 1
	exitNoExec = 126 // the command was found but is not executable
	exitNoCmd  = 127 // the command was not found
)

// ErrStopping refuses what would start something once metad is stopping.
var ErrStopping = errors.New("metad is shutting down")

// Supervisor is what the daemon needs of the services;
// *supervise.Supervisor implements it.
type Supervisor interface {
	Controller
	Load(svcs []conffmt.Service) error
	Reload(svcs []conffmt.Service) supervise.Diff
	Restore(st *supervise.State) error
	Handover(pause func() (resume func())) (st *supervise.State, resume func(), err error)
	Shutdown(ctx context.Context) error
	// Readiness counts the enabled services, the ready or done ones and
	// the failed ones; StopBound is how long a shutdown may take.
	Readiness() (enabled, ready, failed int)
	StopBound() time.Duration
}

// Controller is what control asks of the services: the methods of
// netctl.Controller. See Daemon.Controller.
type Controller interface {
	List(names ...string) ([]supervise.Status, error)
	Enable(names ...string) error
	Disable(names ...string) error
	Start(name string) error
	Stop(names ...string) error
	Restart(names ...string) error
	Kill(name string, sig syscall.Signal) error
}

// Procs starts and follows processes; *initsys.Reaper implements it.
type Procs interface {
	Spawn(p *initsys.Proc, done func(initsys.Exit)) (int, error)
	Adopt(pid int, done func(initsys.Exit)) error
	// Pause stops reaping until resume, for a hand-over.
	Pause() (resume func())
}

// Server is a control server as the daemon drives it; netctl's Local and
// Server implement it.
type Server interface {
	// Quiesce stops taking requests and waits until those taken are
	// answered, or ctx is done; resume takes requests again.
	Quiesce(ctx context.Context) (resume func(), err error)
	// Dup returns a duplicate of the server's socket without
	// close-on-exec, for the next image.
	Dup() (int, error)
}

// Control is the control servers, made by main (package netctl).
type Control struct {
	Local   Server // the control socket; nil if none
	Network Server // network control; nil when off
	Close   func() // stops both and returns when they are gone; nil if nothing to close
}

// ControlFDs are the control sockets the previous image handed over, for
// the control servers to take instead of making new ones; -1 if none.
type ControlFDs struct{ Local, Network int }

// Options are metad's settings from its command line.
type Options struct {
	Conf         string        // the config file
	ConfOptional bool          // a missing Conf is no config at all (command mode, default file)
	Socket       string        // the control socket: a live metad there makes metad refuse to start
	Command      []string      // command mode: the main process and its arguments
	Group        bool          // command mode: forward signals to the command's process group
	StopTimeout  time.Duration // grace between the stop signal and SIGKILL
	Version      string        // metad's, for the log
}

// Config is what a Daemon needs from its owner.
type Config struct {
	Options
	Log        zerolog.Logger
	Exe        string // the binary a re-exec executes
	Machine    bool   // PID 1 of the machine: it never refuses to start
	Signals    <-chan os.Signal
	Procs      Procs
	Supervisor Supervisor
	Inherited  *supervise.Inherited // sockets handed to metad; the unused are closed once loaded
	Handed     *Handover            // the previous image's state (re-exec); nil if none
	// Control makes and starts the control servers, serving d; fds are
	// the sockets handed over. It fails only when the control socket
	// cannot be made; metad then runs without control (logged), unless
	// another metad answers on it. nil: no control.
	Control func(d *Daemon, fds ControlFDs) (Control, error)
	Stderr  io.Writer // for config errors and a command that cannot start; nil: os.Stderr
	// Ends are the services' ends for good (supervise.Config.Ended);
	// Changed wakes the loop when a service's state changed
	// (supervise.Config.Changed). Either may be nil.
	Ends    <-chan supervise.End
	Changed <-chan struct{}
}

// Daemon is a running metad: it owns the phase, the event loop and the
// system requests control makes (reload, re-exec, shutdown). Its exported
// methods are safe for concurrent use.
type Daemon struct {
	cfg       Config
	log       zerolog.Logger
	phase     atomic.Uint32 // a Phase; changed by the loop alone, through set
	ctl       Control
	finals    chan initsys.Final     // shutdown requests from control
	reexecs   chan struct{}          // re-exec requests from control
	next      atomic.Pointer[Answer] // what the binary CheckReexec checked last answered
	reloading sync.Mutex             // one reload or hand-over at a time
	cmd       command
	parent    parent // metad's own NOTIFY_SOCKET, if any; the loop's

	// What tests replace: the check run, exec(2), signal forwarding and
	// the config loader.
	check   func(path string) (Answer, error)
	exec    func(path string, argv, env []string) error
	forward func(pid int, sig syscall.Signal, group bool) error
	load    func(path string) ([]conffmt.Service, error)
}

// New returns a Daemon in phase Starting; Run runs it.
func New(cfg Config) *Daemon {
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	d := &Daemon{
		cfg:     cfg,
		log:     cfg.Log,
		finals:  make(chan initsys.Final, 1),
		reexecs: make(chan struct{}, 1),
		exec:    syscall.Exec,
		forward: initsys.Forward,
		load:    func(path string) ([]conffmt.Service, error) { return conffmt.Load(path, nil) },
		parent:  parent{addr: parentSocket()},
	}
	d.check = func(path string) (Answer, error) { return runCheck(cfg.Procs, path) }
	return d
}

// Phase returns the phase metad is in.
func (d *Daemon) Phase() Phase { return Phase(d.phase.Load()) }

// Machine reports whether metad is PID 1 of the machine.
func (d *Daemon) Machine() bool { return d.cfg.Machine }

// set moves metad to phase to and logs it at info with msg and fields
// (key, value pairs). A change the phases do not allow is logged as an
// error and not made. Only the loop calls it.
func (d *Daemon) set(to Phase, msg string, fields ...any) {
	from := d.Phase()
	if !from.next(to) {
		d.log.Error().Stringer("phase", from).Stringer("to", to).Msg("impossible phase change: ignored")
		return
	}
	d.phase.Store(uint32(to))
	d.log.Info().Fields(fields).Stringer("phase", to).Stringer("from", from).Msg(msg)
}

// cause is why metad stops, for the log.
type cause struct {
	msg    string
	fields []any
}

// Run runs metad through its phases and returns its exit status and, for
// PID 1 of a machine, how to end it. It blocks until metad has stopped;
// call it once.
func (d *Daemon) Run() (int, initsys.Final) {
	if status, ok := d.start(); !ok {
		d.set(Stopped, "metad not started", "status", status)
		return status, initsys.Poweroff
	}
	status, final, why := d.serve()
	d.stop(why)
	d.set(Stopped, "metad stopped", "status", status)
	return status, final
}

// start refuses to run beside a live metad, starts control and loads the
// services, or restores those handed over. It reports false, with the
// exit status, when metad cannot start; nothing is left running then.
func (d *Daemon) start() (int, bool) {
	fds := ControlFDs{Local: d.cfg.Handed.fd(fdControl), Network: d.cfg.Handed.fd(fdNetwork)}
	if err := d.refuseTwice(fds); err != nil {
		d.log.Error().Err(err).Msg("cannot start control")
		return ExitFail, false
	}
	if d.cfg.Control != nil {
		ctl, err := d.cfg.Control(d, fds)
		if err != nil {
			if err := d.refuseTwice(fds); err != nil { // it started meanwhile
				d.log.Error().Err(err).Msg("cannot start control")
				return ExitFail, false
			}
			if !d.cfg.Machine { // PID 1 of a machine carries on without control: it must not exit
				d.log.Error().Err(err).Str("hint", "give -s or $METAD_SOCKET a socket in a directory metad can write").Msg("cannot start control")
				return ExitFail, false
			}
			d.log.Error().Err(err).Msg("cannot start control")
		}
		d.ctl = ctl
	}
	services := 0
	if h := d.cfg.Handed; h != nil {
		if err := d.cfg.Supervisor.Restore(h.Services); err != nil {
			d.log.Warn().Err(err).Msg("cannot restore every instance")
		}
		instances, sockets := h.Services.Counts()
		services = len(h.Services.Services)
		d.log.Info().Int("instances", instances).Int("sockets", sockets).Int("state_version", h.Version).Msg("took over from the previous metad")
	} else {
		svcs, err := d.loadConfig()
		if err != nil {
			fmt.Fprintln(d.cfg.Stderr, err) // FILE:LINE:COL lines, as metad -n prints them
		} else if err = d.cfg.Supervisor.Load(svcs); err != nil {
			d.log.Error().Err(err).Msg("cannot load services")
		}
		if err != nil {
			d.closeControl(time.Now().Add(closeLimit))
			return ExitFail, false
		}
		services = len(svcs)
	}
	d.cfg.Inherited.CloseUnused()
	d.set(Serving, "metad started", "config", d.cfg.Conf, "services", services, "version", d.cfg.Version)
	return ExitOK, true
}

// refuseTwice returns an error when another metad answers on the control
// socket. PID 1 of a machine never refuses: it must not exit.
func (d *Daemon) refuseTwice(fds ControlFDs) error {
	if fds.Local >= 0 || d.cfg.Machine || d.cfg.Socket == "" {
		return nil
	}
	c, err := net.DialTimeout("unix", d.cfg.Socket, probeTimeout)
	if err != nil {
		return nil // nothing answers: ListenLocal replaces a stale socket
	}
	c.Close()
	return fmt.Errorf("cannot create control socket %q: another metad is listening on it; not starting a second one (-s names another socket)", d.cfg.Socket)
}

// loadConfig reads the config. In command mode a missing default config
// is no config at all; a named one must exist.
func (d *Daemon) loadConfig() ([]conffmt.Service, error) {
	svcs, err := d.load(d.cfg.Conf)
	if err != nil && d.cfg.ConfOptional && errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return svcs, err
}

// serve is the event loop of phase Serving: it handles signals, control's
// requests and the command's exit until it is time to stop, and returns
// the exit status, how a machine ends, and why.
func (d *Daemon) serve() (int, initsys.Final, cause) {
	if len(d.cfg.Command) > 0 {
		if status, ok := d.startCommand(); !ok {
			return status, initsys.Poweroff, cause{msg: "shutting down: no command"}
		}
	}
	d.notifyParent(true)
	for {
		select {
		case <-d.cfg.Changed:
			d.notifyParent(true)
		case e := <-d.cfg.Ends:
			if status, ok := endStatus(e); ok {
				return status, initsys.Poweroff, cause{"a service ended for good: shutting down", []any{"service", e.Service, "failed", e.Failed, "reason", e.Reason, "status", status}}
			}
		case e := <-d.cmd.exits:
			d.cmd.pid = 0
			return e.Code(), initsys.Poweroff, cause{"command exited", []any{"pid", e.PID, "status", e.String()}}
		case f := <-d.finals:
			return ExitOK, f, cause{"shutting down on request", []any{"action", f.String()}}
		case <-d.reexecs:
			if err := d.reexec(); err != nil {
				d.log.Error().Err(err).Msg("cannot re-execute: carrying on")
			}
		case sig := <-d.cfg.Signals:
			s := sig.(syscall.Signal)
			switch initsys.Policy(s, d.mode()) {
			case initsys.Shutdown:
				final := initsys.Poweroff
				if s == syscall.SIGINT {
					final = initsys.Reboot
				}
				return ExitOK, final, cause{"shutting down", []any{"signal", s.String()}}
			case initsys.Reload:
				d.Reload() // logs its errors
			case initsys.Relay:
				d.relay(s)
			default:
				d.log.Debug().Stringer("signal", s).Msg("ignored signal")
			}
		}
	}
}

func (d *Daemon) mode() initsys.Mode {
	if len(d.cfg.Command) > 0 {
		return initsys.Command
	}
	return initsys.Config
}

// stop is phase Stopping: control first refuses what would start
// something and finishes the requests under way, then the services and
// the command are stopped, all within the stop timeout plus a slack,
// whatever is stuck; then control closes.
func (d *Daemon) stop(why cause) {
	d.set(Stopping, why.msg, why.fields...)
	d.sendParent("STOPPING=1", "STATUS=shutting down")
	end := time.Now().Add(max(d.cfg.StopTimeout, d.cfg.Supervisor.StopBound()) + shutdownSlack)
	ctx, cancel := context.WithDeadline(context.Background(), end.Add(-closeGrace))
	defer cancel()
	qctx, qcancel := context.WithTimeout(ctx, stopQuiesce)
	d.quiesce(qctx, "shutting down")()
	qcancel()

	// The supervisor's deadline comes a little before metad's, so that
	// what it says of a service that is stuck is heard.
	sctx, scancel := context.WithDeadline(ctx, end.Add(-closeGrace-returnGrace))
	defer scancel()
	result := make(chan error, 1)
	go func() { result <- d.cfg.Supervisor.Shutdown(sctx) }()
	stopped := (<-chan error)(result) // nil once it has returned
	kill := d.stopCommand()
	for stopped != nil || d.cmd.pid != 0 {
		select {
		case err := <-stopped:
			if err != nil {
				d.log.Error().Err(err).Msg("cannot stop every service in time")
			}
			stopped = nil
		case e := <-d.cmd.exits:
			d.cmd.pid = 0
			d.log.Info().Int("pid", e.PID).Str("status", e.String()).Msg("command exited")
		case <-kill:
			kill = nil
			d.signalCommand(syscall.SIGKILL)
		case sig := <-d.cfg.Signals:
			if s := sig.(syscall.Signal); initsys.Policy(s, d.mode()) == initsys.Relay {
				d.relay(s)
			} else {
				d.log.Debug().Stringer("signal", s).Msg("ignored signal: shutting down already")
			}
		case <-ctx.Done():
			if stopped != nil {
				d.log.Error().Msg("cannot stop every service in time: the supervisor did not return; exiting all the same")
			}
			if d.cmd.pid != 0 {
				d.log.Error().Int("pid", d.cmd.pid).Msg("cannot stop the command in time: exiting all the same")
			}
			stopped, d.cmd.pid = nil, 0
		}
	}
	d.closeControl(end)
}

// quiesce quiesces the control servers until ctx is done, and returns
// what resumes them.
func (d *Daemon) quiesce(ctx context.Context, doing string) (resume func()) {
	var resumes []func()
	for _, s := range []Server{d.ctl.Local, d.ctl.Network} {
		if s == nil {
			continue
		}
		r, err := s.Quiesce(ctx)
		resumes = append(resumes, r)
		if err != nil {
			d.log.Warn().Err(err).Msg("control requests still unanswered: " + doing + " all the same")
		}
	}
	return func() {
		for _, r := range resumes {
			r()
		}
	}
}

// closeControl closes the control servers, waiting for them until end.
func (d *Daemon) closeControl(end time.Time) {
	if d.ctl.Close == nil {
		return
	}
	closed := make(chan struct{})
	go func() {
		d.ctl.Close()
		close(closed)
	}()
	timer := time.NewTimer(time.Until(end))
	defer timer.Stop()
	select {
	case <-closed:
	case <-timer.C:
		d.log.Error().Msg("cannot close control in time: exiting all the same")
	}
}

// endStatus says whether a service's end for good shuts metad down
// (on_failure=shutdown, on_success=shutdown), and with which exit status:
// the service's last for a failure, 0 for a success.
func endStatus(e supervise.End) (int, bool) {
	if e.Action != conffmt.ActionShutdown {
		return 0, false
	}
	if !e.Failed {
		return ExitOK, true
	}
	if e.Code == 0 { // failed without a status of its own: a pidfile daemon never found
		return ExitFail, true
	}
	return e.Code, true
}
