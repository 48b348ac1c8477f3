package daemon

import (
	"fmt"
	"strings"

	"metad/init"
)

// This file is what control asks of metad itself (netctl.System), and
// the guard on what it asks of the services.

// Reload re-reads the config file and applies the difference (see
// supervise.Supervisor.Reload). A file with any error changes nothing:
// the error lists every problem, one FILE:LINE:COL line each. Either way
// the outcome is logged, for a reload asked by metac as for one asked by
// SIGHUP. Reloads run one at a time; once metad is stopping they are
// refused.
func (d *Daemon) Reload() error {
	err := d.reload()
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			d.log.Error().Msg(line)
		}
		d.log.Error().Str("config", d.cfg.Conf).Msg("config not reloaded: nothing changed")
	}
	return err
}

func (d *Daemon) reload() error {
	if p := d.Phase(); p == Starting || p >= Stopping {
		return fmt.Errorf("cannot reload: %w", d.refusal(p))
	}
	d.reloading.Lock()
	defer d.reloading.Unlock()
	svcs, err := d.load(d.cfg.Conf)
	if err != nil {
		return err
	}
	diff := d.cfg.Supervisor.Reload(svcs)
	d.log.Info().Str("config", d.cfg.Conf).Strs("added", diff.Added).Strs("removed", diff.Removed).Strs("changed", diff.Changed).Msg("reloaded")
	return nil
}

// refusal says why phase p refuses a request.
func (d *Daemon) refusal(p Phase) error {
	if p >= Stopping {
		return ErrStopping
	}
	return fmt.Errorf("metad is %s", p)
}

// CheckReexec checks that the binary on disk can take over: it starts,
// and reads a state this image can write. A refusal is logged and
// returned with the reason; nothing changes then.
func (d *Daemon) CheckReexec() error {
	err := d.checkReexec()
	if err != nil {
		d.log.Warn().Err(err).Msg("re-exec refused")
	}
	return err
}

func (d *Daemon) checkReexec() error {
	if p := d.Phase(); p != Serving {
		return fmt.Errorf("cannot re-execute: %w", d.refusal(p))
	}
	a, err := d.check(d.cfg.Exe)
	if err == nil {
		_, err = a.choose()
	}
	if err != nil {
		return fmt.Errorf("cannot re-execute %q: %w", d.cfg.Exe, err)
	}
	d.next.Store(&a)
	return nil
}

// Reexec asks the event loop to execute the binary CheckReexec checked
// in place of this image, keeping every instance, socket and state. It
// does not wait.
func (d *Daemon) Reexec() {
	select {
	case d.reexecs <- struct{}{}:
	default: // one is under way
	}
}

// Shutdown asks the event loop to stop everything and then, as PID 1 of a
// machine, do f. It does not wait.
func (d *Daemon) Shutdown(f initsys.Final) {
	select {
	case d.finals <- f:
	default: // a shutdown is already under way
	}
}

// Controller returns the services as control may ask them: enable, start
// and restart are refused with ErrStopping once metad is stopping, so
// that nothing started outlives it; list, stop, disable and kill are
// still served, to watch a shutdown and to help one that is stuck.
func (d *Daemon) Controller() Controller { return guarded{d.cfg.Supervisor, d} }

type guarded struct {
	Controller
	d *Daemon
}

// starting returns ErrStopping, wrapped, once metad is stopping.
func (g guarded) starting(verb string) error {
	if p := g.d.Phase(); p >= Stopping {
		return fmt.Errorf("cannot %s: %w", verb, ErrStopping)
	}
	return nil
}

func (g guarded) Enable(names ...string) error {
	if err := g.starting("enable"); err != nil {
		return err
	}
	return g.Controller.Enable(names...)
}

func (g guarded) Start(name string) error {
	if err := g.starting("start"); err != nil {
		return err
	}
	return g.Controller.Start(name)
}

func (g guarded) Restart(names ...string) error {
	if err := g.starting("restart"); err != nil {
		return err
	}
	return g.Controller.Restart(names...)
}
