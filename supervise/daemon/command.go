package daemon

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"metad/init"
)

// command is the main process of command mode. The loop alone uses it.
type command struct {
	pid   int               // 0 when none runs (not started, or ended)
	exits chan initsys.Exit // its exit; nil outside command mode
}

// startCommand starts the command, or follows the one the previous image
// handed over. It reports false, with the exit status a shell would give,
// when the command cannot start. On a terminal where metad is in the
// foreground, the command gets the foreground process group, so that job
// control and Ctrl-C reach it.
func (d *Daemon) startCommand() (int, bool) {
	exits := make(chan initsys.Exit, 1)
	d.cmd.exits = exits
	done := func(e initsys.Exit) { exits <- e }
	if h := d.cfg.Handed; h != nil && h.Command > 0 {
		if err := d.cfg.Procs.Adopt(h.Command, done); err != nil {
			d.log.Error().Err(err).Msg("cannot follow the command after re-exec")
			return ExitOK, false
		}
		d.cmd.pid = h.Command
		return ExitOK, true
	}
	argv := d.cfg.Command
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(d.cfg.Stderr, "metad: cannot start %q: %v\n", argv[0], err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return exitNoCmd, false
		}
		return exitNoExec, false
	}
	// The command gets the signal dispositions and mask metad was started
	// with (SPEC §9: transparent like tini); services get the defaults.
	start := initsys.StartSignals()
	p := &initsys.Proc{Path: path, Argv: argv, Env: ChildEnv(os.Environ()), Files: []int{0, 1, 2}, Signals: &start}
	if initsys.InForeground(0) {
		p.Foreground = true
	} else {
		p.Setsid = true
	}
	pid, err := d.cfg.Procs.Spawn(p, done)
	if err != nil {
		fmt.Fprintf(d.cfg.Stderr, "metad: %v\n", err)
		return initsys.StartCode(err), false
	}
	d.cmd.pid = pid
	return ExitOK, true
}

// relay forwards sig to the command (or its process group, with -g).
func (d *Daemon) relay(sig syscall.Signal) {
	if d.cmd.pid == 0 {
		return
	}
	if err := d.forward(d.cmd.pid, sig, d.cfg.Group); err != nil {
		d.log.Warn().Err(err).Stringer("signal", sig).Msg("cannot forward signal")
	}
}

// stopCommand sends the command, if it still runs when metad stops (a
// shutdown asked by control), SIGTERM, and returns when to send SIGKILL:
// nothing metad started outlives it.
func (d *Daemon) stopCommand() <-chan time.Time {
	if d.cmd.pid == 0 {
		return nil
	}
	d.log.Info().Int("pid", d.cmd.pid).Msg("stopping the command")
	d.signalCommand(syscall.SIGTERM)
	return time.After(d.cfg.StopTimeout)
}

func (d *Daemon) signalCommand(sig syscall.Signal) {
	if err := d.forward(d.cmd.pid, sig, d.cfg.Group); err != nil {
		d.log.Warn().Err(err).Stringer("signal", sig).Msg("cannot signal the command")
	}
}
