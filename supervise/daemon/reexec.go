package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// reexec is phase Reexecuting: it hands everything over to the binary
// CheckReexec checked and executes it in place of this image (see
// state.go). It returns only if that failed, everything undone and metad
// serving again.
func (d *Daemon) reexec() error {
	a := d.next.Load()
	if a == nil {
		return errors.New("cannot re-execute: the binary was not checked")
	}
	version, err := a.choose()
	if err != nil {
		return fmt.Errorf("cannot re-execute %q: %w", d.cfg.Exe, err)
	}
	d.set(Reexecuting, "handing over", "binary", d.cfg.Exe, "state_version", version)
	err = d.handOver(version, version > 1 || a.TakesNetwork)
	d.set(Serving, "serving again")
	return err
}

// handOver quiesces control, freezes the services, writes the state and
// executes the binary. It returns only on failure, after undoing it all.
func (d *Daemon) handOver(version int, takesNetwork bool) error {
	// The control requests being answered are answered first; new ones
	// wait in the socket's backlog for the next image. This comes before
	// the reload lock and the freeze: a request may need either.
	ctx, cancel := context.WithTimeout(context.Background(), quiesceTimeout)
	defer cancel()
	resumeControl := d.quiesce(ctx, "re-executing")
	if len(d.finals) > 0 { // a shutdown asked before control was quiesced comes first
		resumeControl()
		return fmt.Errorf("cannot re-execute: %w", ErrStopping)
	}
	// No reload may change the services while they are handed over.
	d.reloading.Lock()
	defer d.reloading.Unlock()
	st, resume, err := d.cfg.Supervisor.Handover(d.cfg.Procs.Pause)
	if err != nil {
		resumeControl()
		return fmt.Errorf("cannot re-execute %q: %w", d.cfg.Exe, err)
	}
	fail := func(err error) error {
		resume()
		resumeControl()
		return fmt.Errorf("cannot re-execute %q: %w", d.cfg.Exe, err)
	}
	var own []NamedFD
	for _, s := range []struct {
		name string
		srv  Server
	}{{fdControl, d.ctl.Local}, {fdNetwork, d.ctl.Network}} {
		if s.srv == nil || (s.name == fdNetwork && !takesNetwork) {
			continue
		}
		fd, err := s.srv.Dup()
		if err != nil {
			d.log.Warn().Err(err).Str("socket", s.name).Msg("cannot hand over a control socket")
			continue
		}
		defer unix.Close(fd)
		own = append(own, NamedFD{s.name, fd})
	}
	data, err := encode(version, st, d.cmd.pid, own)
	if err != nil {
		return fail(err)
	}
	fd, err := writeState(data)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(fd)
	env := withoutEnv(os.Environ(), envStateFD, envPreviousExe)
	env = append(env, envStateFD+"="+strconv.Itoa(fd))
	if prev, err := unix.Open("/proc/self/exe", unix.O_RDONLY, 0); err == nil { // no close-on-exec: for the next image
		defer unix.Close(prev)
		env = append(env, envPreviousExe+"="+strconv.Itoa(prev))
	}
	instances, sockets := st.Counts()
	d.log.Info().Str("binary", d.cfg.Exe).Int("instances", instances).Int("sockets", sockets).Msg("re-executing")
	return fail(d.exec(d.cfg.Exe, os.Args, env))
}
