package supervise

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
)

// StateVersion is the version of the handover state. A metad refuses a
// state of another version; the old image checks the new binary's version
// before it executes it.
const StateVersion = 1

// State is what a metad hands to the image of metad that replaces it
// (re-exec): every service with its config and its state, and the
// descriptors (listening sockets, watched pipes) that stay open across
// exec, by number.
type State struct {
	Version  int            `json:"version"`
	Services []ServiceState `json:"services"`
}

// ServiceState is one service in a State.
type ServiceState struct {
	Config     conffmt.Service `json:"config"`
	Enabled    bool            `json:"enabled"`
	Quitting   bool            `json:"quitting,omitempty"` // removed or shutting down: stops, then goes
	Crashes    int             `json:"crashes"`
	HoldUntil  time.Time       `json:"hold_until"`
	NextPeriod time.Time       `json:"next_period"`
	Restarts   int             `json:"restarts"`
	Held       []time.Time     `json:"held,omitempty"` // stream slots held by crashes, until
	Socket     int             `json:"socket"`         // listening socket descriptor, -1 if none
	Instances  []InstanceState `json:"instances"`
	Pending    []time.Time     `json:"pending,omitempty"` // pidfile daemons still to be read: start times
	Outputs    []OutputState   `json:"outputs,omitempty"`
}

// InstanceState is one instance in a State.
type InstanceState struct {
	PID      int       `json:"pid"`
	PGID     int       `json:"pgid"`
	Started  time.Time `json:"started"`
	Launcher bool      `json:"launcher,omitempty"`
	Sent     int       `json:"sent,omitempty"`
	Asked    bool      `json:"asked,omitempty"`
	KillAt   time.Time `json:"kill_at"`
	Killed   bool      `json:"killed,omitempty"`
}

// OutputState is a watched pipe still open, in a State.
type OutputState struct {
	PID    int    `json:"pid"`
	Stream string `json:"stream"`
	FD     int    `json:"fd"`
}

// FDs returns every descriptor the state hands over.
func (st *State) FDs() []int {
	var fds []int
	for _, s := range st.Services {
		if s.Socket >= 0 {
			fds = append(fds, s.Socket)
		}
		for _, o := range s.Outputs {
			fds = append(fds, o.FD)
		}
	}
	return fds
}

// Counts returns how many instances and sockets the state hands over.
func (st *State) Counts() (instances, sockets int) {
	for _, s := range st.Services {
		instances += len(s.Instances)
		if s.Socket >= 0 {
			sockets++
		}
	}
	return instances, sockets
}

// Handover freezes every service and returns its state, for a re-exec:
// acceptors and watchers stop (connections accepted meanwhile are served
// first), watched pipes stop being read, pause (the reaper's Pause) stops
// reaping, and each service takes the exits delivered until then. The
// descriptors in the state are duplicates without close-on-exec, made for
// the new image. resume undoes it all, for when the exec fails: it closes
// those duplicates, resumes the reaper and lets the services carry on.
func (s *Supervisor) Handover(pause func() (resume func())) (st *State, resume func(), err error) {
	s.mu.Lock()
	svcs := slices.Clone(s.order)
	for _, sv := range s.leaving {
		select {
		case <-sv.done:
		default:
			svcs = append(svcs, sv)
		}
	}
	s.mu.Unlock()

	paused, release := make(chan struct{}), make(chan struct{})
	states := make(chan ServiceState, len(svcs))
	var frozen []*service
	for _, sv := range svcs {
		ready := make(chan struct{})
		park := func() {
			sv.freeze()
			close(ready)
			<-paused
			for _, e := range sv.exits.take() {
				sv.exitedFrozen(e)
			}
			states <- sv.snapshot()
			<-release
			sv.thaw()
		}
		select {
		case sv.reqs <- park:
			<-ready
			frozen = append(frozen, sv)
		case <-sv.done:
		}
	}
	resumeReaper := pause()
	close(paused)
	st = &State{Version: StateVersion}
	for range frozen {
		st.Services = append(st.Services, <-states)
	}
	resume = func() {
		for _, fd := range st.FDs() {
			unix.Close(fd)
		}
		resumeReaper()
		close(release)
	}
	return st, resume, nil
}

// freeze stops everything that runs beside the service goroutine.
func (sv *service) freeze() {
	sv.stopAccepting()
	sv.stopWatching()
	live := sv.readers[:0]
	for _, rd := range sv.readers {
		if rd.stop() {
			live = append(live, rd)
		}
	}
	sv.readers = live
}

// thaw restarts what freeze stopped, after a failed re-exec.
func (sv *service) thaw() {
	for _, rd := range sv.readers {
		rd.restart()
	}
	sv.reconcile(time.Now())
}

// exitedFrozen records an exit delivered while frozen, without starting
// anything: the reaper is paused. The new image's rules start what is due.
func (sv *service) exitedFrozen(e initsys.Exit) {
	if _, outcome, _, ok := sv.takeExit(e); ok {
		sv.crashes = NextCrashes(sv.crashes, outcome)
		if outcome == Crashed {
			sv.holdUntil = e.Time.Add(Delay(sv.crashes, sv.conf.Backoff))
		}
	}
}

// snapshot returns the service's state, with duplicates of its
// descriptors that survive exec.
func (sv *service) snapshot() ServiceState {
	st := ServiceState{
		Config:     sv.conf,
		Enabled:    sv.enabled,
		Quitting:   sv.quitting,
		Crashes:    sv.crashes,
		HoldUntil:  sv.holdUntil,
		NextPeriod: sv.nextPeriod,
		Restarts:   sv.restarts,
		Held:       slices.Clone(sv.held),
		Socket:     -1,
	}
	switch {
	case sv.sock != nil:
		st.Socket = dupFile(sv.sock, sv)
	case sv.lfd >= 0:
		st.Socket = dupFD(sv.lfd, sv)
	}
	for _, inst := range sv.instances {
		st.Instances = append(st.Instances, InstanceState{
			PID: inst.pid, PGID: inst.pgid, Started: inst.started, Launcher: inst.launcher,
			Sent: int(inst.sent), Asked: inst.asked, KillAt: inst.killAt, Killed: inst.killed,
		})
	}
	for _, p := range sv.pending {
		st.Pending = append(st.Pending, p.started)
	}
	for _, rd := range sv.readers {
		if fd := dupFile(rd.f, sv); fd >= 0 {
			st.Outputs = append(st.Outputs, OutputState{PID: rd.pid, Stream: rd.stream, FD: fd})
		}
	}
	return st
}

// dupFD duplicates fd without close-on-exec, or returns -1 and logs.
func dupFD(fd int, sv *service) int {
	nfd, err := unix.Dup(fd)
	if err != nil {
		sv.log.Error().Err(err).Msg("cannot hand over a descriptor")
		return -1
	}
	return nfd
}

// dupFile is dupFD for an *os.File, without changing its blocking mode.
func dupFile(f *os.File, sv *service) int {
	rc, err := f.SyscallConn()
	if err != nil {
		sv.log.Error().Err(err).Msg("cannot hand over a descriptor")
		return -1
	}
	nfd := -1
	rc.Control(func(fd uintptr) { nfd = dupFD(int(fd), sv) })
	return nfd
}

// Restore loads the services of a state handed over by a previous image
// of metad, adopting their instances (still metad's children) and taking
// their descriptors, and starts them. It is Load for a re-exec.
func (s *Supervisor) Restore(st *State) error {
	if st.Version != StateVersion {
		return fmt.Errorf("cannot restore state version %d: this metad knows version %d", st.Version, StateVersion)
	}
	for _, ss := range st.Services {
		for _, fd := range append([]int{ss.Socket}, fdsOf(ss.Outputs)...) {
			if fd >= 0 {
				unix.CloseOnExec(fd)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, ss := range st.Services {
		sv := newService(s, ss.Config)
		if err := sv.restore(ss); err != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", ss.Config.Name, err))
		}
		if ss.Quitting {
			s.leaving = append(s.leaving, sv)
		} else {
			s.services[sv.conf.Name] = sv
			s.order = append(s.order, sv)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			sv.run()
		}()
	}
	return errors.Join(errs...)
}

func fdsOf(outs []OutputState) []int {
	fds := make([]int, len(outs))
	for i, o := range outs {
		fds[i] = o.FD
	}
	return fds
}

// restore sets the service's state from ss, before its goroutine starts.
func (sv *service) restore(ss ServiceState) error {
	sv.enabled, sv.quitting = ss.Enabled, ss.Quitting
	sv.crashes, sv.holdUntil, sv.nextPeriod, sv.restarts = ss.Crashes, ss.HoldUntil, ss.NextPeriod, ss.Restarts
	sv.held = ss.Held
	if ss.Socket >= 0 {
		switch sv.conf.Class {
		case conffmt.Stream:
			if err := unix.SetNonblock(ss.Socket, true); err != nil {
				unix.Close(ss.Socket)
				return fmt.Errorf("cannot take socket %s: %w", sv.endpoint(), err)
			}
			sv.sock = os.NewFile(uintptr(ss.Socket), sv.endpoint().String())
		case conffmt.Listener:
			sv.lfd = ss.Socket
		default:
			unix.Close(ss.Socket)
		}
	}
	var errs []error
	for _, is := range ss.Instances {
		inst := &instance{
			pid: is.PID, pgid: is.PGID, started: is.Started, launcher: is.Launcher,
			sent: syscall.Signal(is.Sent), asked: is.Asked, killAt: is.KillAt, killed: is.Killed,
		}
		sv.instances[is.PID] = inst
		if err := sv.sup.cfg.Procs.Adopt(is.PID, sv.onExit); err != nil {
			// Reaped before the handover could see it: it has ended.
			delete(sv.instances, is.PID)
			errs = append(errs, err)
		}
	}
	now := time.Now()
	for _, started := range ss.Pending {
		sv.pending = append(sv.pending, &pending{started: started, retryAt: now, giveUp: now.Add(pidfileGrace), delay: 10 * time.Millisecond})
	}
	if sv.conf.Class == conffmt.Stream {
		for range min(len(sv.instances)+len(sv.held), cap(sv.slots)) {
			sv.slots <- struct{}{}
		}
	}
	for _, o := range ss.Outputs {
		f := os.NewFile(uintptr(o.FD), o.Stream)
		sv.readers = append(sv.readers, startReader(f, o.PID, o.Stream, sv.log.With().Int("pid", o.PID).Logger()))
	}
	return errors.Join(errs...)
}
