package supervise

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
	"metad/supervise/notify"
)

// StateVersion is the version of the handover state this metad writes.
// Decoding also takes version 1 (a service's config as the JSON of
// conffmt.Service), once, converting it.
const StateVersion = 2

// State is what a metad hands to the image of metad that replaces it
// (re-exec): every service in config order with its config and its
// state, and the descriptors (listening sockets, watched pipes) that stay
// open across exec, by number.
type State struct {
	Version  int            `json:"version"`
	Services []ServiceState `json:"services"`
}

// ServiceState is one service in a State. The config is its canonical
// config line (conffmt.Print), so that a config field added later is
// carried by the config language, not by this format; what a config line
// does not hold, the resolved program and user, are fields of their own.
type ServiceState struct {
	Config     string          `json:"config"`
	Path       string          `json:"path"`
	User       *UserState      `json:"user,omitempty"`
	Enabled    bool            `json:"enabled"`
	Quitting   bool            `json:"quitting,omitempty"` // removed or shutting down: stops, then goes
	Crashes    int             `json:"crashes"`
	HoldUntil  time.Time       `json:"hold_until"`
	NextPeriod time.Time       `json:"next_period"`
	Restarts   int             `json:"restarts"`
	Starts     int             `json:"starts,omitempty"`
	Exits      int             `json:"exits,omitempty"`
	LastExit   *LastExit       `json:"last_exit,omitempty"`
	State      string          `json:"state,omitempty"` // its state, reason and since when, so that status goes on
	Reason     string          `json:"reason,omitempty"`
	Since      time.Time       `json:"since,omitempty"`
	Held       []time.Time     `json:"held,omitempty"`      // stream slots held by crashes, until
	HeldFrom   []string        `json:"held_from,omitempty"` // whose each held slot is: ADDR, or service:ADDR for the service's own
	Socket     int             `json:"socket"`              // listening socket descriptor, -1 if none
	Instances  []InstanceState `json:"instances"`
	Pending    []time.Time     `json:"pending,omitempty"` // pidfile daemons still to be read: start times
	Outputs    []OutputState   `json:"outputs,omitempty"`
	Custody    []int           `json:"custody,omitempty"` // sessions of ended instances with leftovers
	Strays     bool            `json:"strays,omitempty"`  // the processes of the service's cgroup that no instance owns are in custody
	End        *EndState       `json:"end,omitempty"`     // ended for good (done or failed) by its own rules
	Notify     *NotifyState    `json:"notify,omitempty"`  // ready=notify: its socket
	Said       string          `json:"said,omitempty"`    // ready=notify: the last STATUS= text
	LastStop   *LastStop       `json:"last_stop,omitempty"`
	Refused    *Refused        `json:"refused,omitempty"` // stream: connections admission closed
	Unhealthy  int             `json:"unhealthy,omitempty"`
	HealthErr  string          `json:"health_error,omitempty"`
}

// NotifyState is a service's NOTIFY_SOCKET in a State: the descriptor
// and the address its programs were given.
type NotifyState struct {
	FD   int    `json:"fd"`
	Addr string `json:"addr"`
}

// EndState is a service's end for good in a State.
type EndState struct {
	Failed bool   `json:"failed"`
	Reason string `json:"reason"`
	Code   int    `json:"code"`
}

// UserState is a resolved user= option: the ids the config line's names
// resolved to when the service was loaded.
type UserState struct {
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
}

// InstanceState is one instance in a State.
type InstanceState struct {
	PID      int       `json:"pid"`
	PGID     int       `json:"pgid"`
	SID      int       `json:"sid,omitempty"`
	Started  time.Time `json:"started"`
	Launcher bool      `json:"launcher,omitempty"`
	Adopted  bool      `json:"adopted,omitempty"` // found by its pidfile
	Remote   string    `json:"remote,omitempty"`  // stream: the client, ADDR:PORT
	Sent     int       `json:"sent,omitempty"`
	Asked    bool      `json:"asked,omitempty"`
	KillAt   time.Time `json:"kill_at"`
	Killed   bool      `json:"killed,omitempty"`
	Ready    bool      `json:"ready,omitempty"`
	ReadyBy  time.Time `json:"ready_by,omitzero"`
	Late     bool      `json:"late,omitempty"`
}

// OutputState is a watched pipe still open, in a State.
type OutputState struct {
	PID    int    `json:"pid"`
	Stream string `json:"stream"`
	FD     int    `json:"fd"`
}

// NamedFD is a descriptor a State hands over, with a name that says
// whose it is: "SERVICE/socket" or "SERVICE/PID/STREAM" (watched output).
type NamedFD struct {
	Name string
	FD   int
}

// Descriptors returns every descriptor the state hands over, named.
func (st *State) Descriptors() []NamedFD {
	var fds []NamedFD
	for _, s := range st.Services {
		name := s.name()
		if s.Socket >= 0 {
			fds = append(fds, NamedFD{Name: name + "/socket", FD: s.Socket})
		}
		if s.Notify != nil {
			fds = append(fds, NamedFD{Name: name + "/notify", FD: s.Notify.FD})
		}
		for _, o := range s.Outputs {
			fds = append(fds, NamedFD{Name: name + "/" + strconv.Itoa(o.PID) + "/" + o.Stream, FD: o.FD})
		}
	}
	return fds
}

// FDs returns every descriptor the state hands over.
func (st *State) FDs() []int {
	var fds []int
	for _, d := range st.Descriptors() {
		fds = append(fds, d.FD)
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

// name is the service's name: the first word of its config line.
func (ss *ServiceState) name() string {
	name, _, _ := strings.Cut(ss.Config, " ")
	return name
}

// UnmarshalJSON decodes a state of version 2, or of version 1, which it
// converts: the result has Version StateVersion. Other versions are
// refused.
func (st *State) UnmarshalJSON(b []byte) error {
	var raw struct {
		Version  int               `json:"version"`
		Services []json.RawMessage `json:"services"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	switch raw.Version {
	case StateVersion, 1:
	default:
		return fmt.Errorf("cannot read state version %d: this metad reads versions 1 and %d", raw.Version, StateVersion)
	}
	out := State{Version: StateVersion, Services: make([]ServiceState, 0, len(raw.Services))}
	for _, r := range raw.Services {
		var ss ServiceState
		var err error
		if raw.Version == 1 {
			ss, err = fromVersion1(r)
		} else {
			err = json.Unmarshal(r, &ss)
		}
		if err != nil {
			return fmt.Errorf("cannot read state version %d: %w", raw.Version, err)
		}
		out.Services = append(out.Services, ss)
	}
	*st = out
	return nil
}

// fromVersion1 converts one service of a version 1 state, whose config
// is the JSON of conffmt.Service as that version knew it.
func fromVersion1(r json.RawMessage) (ServiceState, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(r, &fields); err != nil {
		return ServiceState{}, err
	}
	var c conffmt.Service
	if err := json.Unmarshal(fields["config"], &c); err != nil {
		return ServiceState{}, fmt.Errorf("cannot read config: %w", err)
	}
	delete(fields, "config")
	rest, err := json.Marshal(fields)
	if err != nil {
		return ServiceState{}, err
	}
	var ss ServiceState
	if err := json.Unmarshal(rest, &ss); err != nil {
		return ServiceState{}, err
	}
	if err := ss.setConfig(&c); err != nil {
		return ServiceState{}, err
	}
	// Version 1 kept no session: an instance metad started leads its own;
	// one found by its pidfile is adopted, its session unknown.
	for i := range ss.Instances {
		is := &ss.Instances[i]
		if is.PGID == is.PID {
			is.SID = is.PID
		} else {
			is.Adopted = true
		}
	}
	return ss, nil
}

// setConfig records c as its canonical config line and resolved fields.
func (ss *ServiceState) setConfig(c *conffmt.Service) error {
	var b bytes.Buffer
	if err := conffmt.Print(&b, []conffmt.Service{*c}); err != nil {
		return err
	}
	ss.Config = strings.TrimSuffix(b.String(), "\n")
	ss.Path = c.Path
	ss.User = nil
	if c.User != nil {
		ss.User = &UserState{UID: c.User.UID, GID: c.User.GID, Groups: c.User.Groups}
	}
	return nil
}

// service parses the config line back, with the program and user as
// they were resolved: nothing is looked up again.
func (ss *ServiceState) service() (conffmt.Service, error) {
	r := &conffmt.Resolver{
		LookPath: func(string) (string, error) { return ss.Path, nil },
		LookupUser: func(spec string) (*conffmt.Credential, error) {
			if ss.User == nil {
				return nil, fmt.Errorf("no resolved user for %q", spec)
			}
			name, group, _ := strings.Cut(spec, ":")
			return &conffmt.Credential{User: name, Group: group, UID: ss.User.UID, GID: ss.User.GID, Groups: ss.User.Groups}, nil
		},
		// port= is printed as a number; a probe's port as written,
		// which may be a name of /etc/services: nil looks it up.
		LookupPort: nil,
	}
	// One line alone: the services it depends on are checked with the
	// whole config, not here.
	return conffmt.ParseLine("handed-over state", []byte(ss.Config+"\n"), r)
}

// handover is a Handover under way.
type handover struct {
	paused  chan struct{} // every service is frozen and the reaper paused
	release chan struct{} // the services may carry on (or end, if abandoned)
	abandon bool          // set before release is closed: the services end without a word
}

// Handover freezes every service and returns its state, for a re-exec:
// acceptors and watchers stop (the sockets stay open), watched pipes stop
// being read, pause (the reaper's Pause) stops reaping, and each service
// takes the exits delivered until then. The descriptors in the state are
// duplicates without close-on-exec, made for the new image. resume undoes
// it all, for when the exec fails: it closes those duplicates, resumes the
// reaper and lets the services carry on. A service that does not freeze
// within the call timeout fails the handover (an error naming it; what was
// frozen carries on).
func (s *Supervisor) Handover(pause func() (resume func())) (st *State, resume func(), err error) {
	st, h, resumeReaper, err := s.handover(pause)
	if err != nil {
		return nil, nil, err
	}
	resume = func() {
		for _, fd := range st.FDs() {
			unix.Close(fd)
		}
		resumeReaper()
		close(h.release)
	}
	return st, resume, nil
}

func (s *Supervisor) handover(pause func() (resume func())) (*State, *handover, func(), error) {
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

	h := &handover{paused: make(chan struct{}), release: make(chan struct{})}
	states := make([]ServiceState, len(svcs))
	taken := make([]chan bool, len(svcs)) // per service: true once its state is in states
	var frozen []int
	var errs []error
	for i, sv := range svcs {
		taken[i] = make(chan bool, 1)
		_, err := ask(sv, s.cfg.CallTimeout, func(time.Time) struct{} {
			sv.freeze()
			sv.park(h, &states[i], taken[i])
			return struct{}{}
		})
		if err != nil && !errors.Is(err, errGone) {
			errs = append(errs, err)
			continue
		}
		if err == nil {
			frozen = append(frozen, i)
		}
	}
	if len(errs) > 0 {
		close(h.paused)
		close(h.release)
		return nil, nil, nil, fmt.Errorf("cannot hand over: %w", errors.Join(errs...))
	}
	resumeReaper := pause()
	close(h.paused)
	st := &State{Version: StateVersion}
	for _, i := range frozen {
		select {
		case ok := <-taken[i]:
			if ok {
				st.Services = append(st.Services, states[i])
			}
		case <-time.After(s.cfg.CallTimeout):
			resumeReaper()
			close(h.release)
			return nil, nil, nil, fmt.Errorf("cannot hand over service %q: no state in %v", svcs[i].conf.Name, s.cfg.CallTimeout)
		}
	}
	return st, h, resumeReaper, nil
}

// park is the frozen service's side of a handover, run in its goroutine
// from the freeze request on. It arranges for the goroutine, when it
// next waits, to wait for the reaper's pause, take the exits delivered
// until then, write its state and then wait for the handover to end.
// The waits are not bounded: a handover ends by an exec, which ends
// every goroutine, or by resume.
func (sv *service) park(h *handover, out *ServiceState, taken chan<- bool) {
	sv.parked = func() {
		sv.parked = nil
		<-h.paused
		select {
		case <-h.release: // the handover failed before the pause
			taken <- false
			sv.thaw()
			return
		default:
		}
		for _, e := range sv.exits.take() {
			sv.exitedFrozen(e)
		}
		ss, err := sv.snapshot()
		if err != nil {
			sv.log.Error().Err(err).Msg("cannot hand over")
		}
		*out = ss
		taken <- err == nil
		<-h.release
		if h.abandon {
			sv.abandoned = true
			return
		}
		sv.thaw()
	}
}

// freeze stops everything that runs beside the service goroutine.
func (sv *service) freeze() {
	sv.cls.freeze()
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
	sv.cls.thaw()
	sv.reconcile(time.Now())
}

// exitedFrozen records an exit delivered while frozen, without starting
// or adopting anything: the reaper is paused. The session of an ended
// instance goes into custody unlooked at; the new image looks.
func (sv *service) exitedFrozen(e initsys.Exit) {
	inst, ok := sv.instances[e.PID]
	if !ok {
		gone := func(p int) bool { return p == e.PID }
		sv.custody.members = slices.DeleteFunc(sv.custody.members, gone)
		sv.custody.followed = slices.DeleteFunc(sv.custody.followed, gone)
		return
	}
	end := sv.takeExit(inst, e)
	if !(inst.launcher && end.outcome == Clean) {
		for _, sid := range []int{inst.sid, inst.pid} {
			if sid > 0 && (sid == inst.sid || inst.adopted) && !slices.Contains(sv.custody.sessions, sid) {
				sv.custody.sessions = append(sv.custody.sessions, sid)
			}
		}
	}
	if inst.remote.valid() {
		sv.cls.ended(inst, end) // counts only: admit does nothing while frozen
		return
	}
	sv.backoff.record(e.Time, end.outcome, sv.conf.Backoff)
}

// snapshot returns the service's state, with duplicates of its
// descriptors that survive exec.
func (sv *service) snapshot() (ServiceState, error) {
	st := ServiceState{
		Enabled:   sv.enabled,
		Quitting:  sv.quitting,
		Crashes:   sv.backoff.crashes,
		HoldUntil: sv.backoff.until,
		Restarts:  sv.restarts,
		Starts:    sv.starts,
		Exits:     sv.ended,
		State:     sv.state.String(),
		Reason:    sv.reason,
		Since:     sv.since,
		Socket:    -1,
		Custody:   slices.Clone(sv.custody.sessions),
		Strays:    sv.custody.strays,
	}
	if sv.ended > 0 {
		last := sv.lastExit
		st.LastExit = &last
	}
	if sv.end.kind != endNone {
		st.End = &EndState{Failed: sv.end.kind == endFailed, Reason: sv.end.reason, Code: sv.end.code}
	}
	st.Said, st.LastStop = sv.said, sv.stop.last
	st.Unhealthy, st.HealthErr = sv.unhealthy, sv.healthErr
	if sv.notify != nil {
		if fd, err := sv.notify.sock.Dup(); err != nil {
			sv.log.Error().Err(err).Msg("cannot hand over the notify socket")
		} else {
			st.Notify = &NotifyState{FD: fd, Addr: sv.notify.addr()}
		}
	}
	if err := st.setConfig(&sv.conf); err != nil {
		return st, err
	}
	sv.cls.snapshot(&st)
	for _, inst := range sv.instances {
		is := InstanceState{
			PID: inst.pid, PGID: inst.pgid, SID: inst.sid, Started: inst.started, Launcher: inst.launcher, Adopted: inst.adopted,
			Sent: int(inst.sent), Asked: inst.asked, KillAt: inst.killAt, Killed: inst.killed,
			Ready: inst.ready, ReadyBy: inst.readyBy, Late: inst.late,
		}
		if inst.remote.valid() {
			is.Remote = netipAddrPort(inst.remote)
		}
		st.Instances = append(st.Instances, is)
	}
	slices.SortFunc(st.Instances, func(a, b InstanceState) int { return a.PID - b.PID })
	for _, rd := range sv.readers {
		if fd := dupFile(rd.f, sv); fd >= 0 {
			st.Outputs = append(st.Outputs, OutputState{PID: rd.pid, Stream: rd.stream, FD: fd})
		}
	}
	return st, nil
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
// their descriptors, and starts them in the state's order. It is Load for
// a re-exec. A service whose config cannot be read back is left out, its
// descriptors closed, with an error naming it.
func (s *Supervisor) Restore(st *State) error {
	if st.Version != StateVersion {
		return fmt.Errorf("cannot restore state version %d: this metad knows version %d", st.Version, StateVersion)
	}
	for _, d := range st.Descriptors() {
		unix.CloseOnExec(d.FD)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	var errs []error
	for _, ss := range st.Services {
		c, err := ss.service()
		if err != nil {
			errs = append(errs, fmt.Errorf("cannot restore service %q: %w", ss.name(), err))
			if ss.Socket >= 0 {
				unix.Close(ss.Socket)
			}
			for _, o := range ss.Outputs {
				unix.Close(o.FD)
			}
			continue
		}
		sv := newService(s, c)
		if err := sv.restore(ss); err != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", c.Name, err))
		}
		if ss.Quitting {
			s.leaving = append(s.leaving, sv)
		} else {
			s.deps.add(sv)
			s.services[sv.conf.Name] = sv
			s.order = append(s.order, sv)
		}
		s.launch(sv)
	}
	s.sweepGroups()
	return errors.Join(errs...)
}

// restore sets the service's state from ss, before its goroutine starts.
func (sv *service) restore(ss ServiceState) error {
	now := time.Now()
	var errs []error
	sv.enabled, sv.quitting = ss.Enabled, ss.Quitting
	sv.backoff = backoff{crashes: ss.Crashes, until: ss.HoldUntil}
	sv.restarts = ss.Restarts
	sv.starts, sv.ended = ss.Starts, ss.Exits
	for s := range stateCount {
		if s.String() == ss.State { // what it was, so that settling it again changes no since
			sv.state, sv.reason, sv.since = s, ss.Reason, ss.Since
		}
	}
	if ss.LastExit != nil {
		sv.lastExit = *ss.LastExit
	}
	if e := ss.End; e != nil {
		sv.end = verdict{kind: endDone, reason: e.Reason, code: e.Code}
		if e.Failed {
			sv.end.kind = endFailed
		}
	}
	sv.said, sv.stop.last = ss.Said, ss.LastStop
	sv.unhealthy, sv.healthErr = ss.Unhealthy, ss.HealthErr
	if n := ss.Notify; n != nil {
		if s, err := notify.FromFD(n.FD, n.Addr); err != nil {
			errs = append(errs, err)
		} else {
			sv.useNotify(s)
		}
	}
	if sv.conf.Ready.Kind == conffmt.ReadyNotify && sv.notify == nil {
		if err := sv.openNotify(); err != nil {
			errs = append(errs, err)
		}
	}
	sv.custody.sessions = slices.Clone(ss.Custody)
	sv.custody.strays = ss.Strays && sv.group != nil
	for _, is := range ss.Instances {
		inst := &instance{
			pid: is.PID, pgid: is.PGID, sid: is.SID, started: is.Started, launcher: is.Launcher, adopted: is.Adopted,
			sent: syscall.Signal(is.Sent), asked: is.Asked, killAt: is.KillAt, killed: is.Killed,
		}
		if is.Remote != "" {
			inst.remote = parseRemote(is.Remote)
		}
		sv.restoreReadiness(inst, is, now)
		sv.instances[is.PID] = inst
		if err := sv.sup.cfg.Procs.Adopt(is.PID, sv.onExit); err != nil {
			// Reaped before the handover could see it: it has ended.
			delete(sv.instances, is.PID)
			inst.probe.cancel()
			errs = append(errs, err)
			continue
		}
		if inst.ready && !inst.asked {
			sv.startHealth(inst, now)
		}
	}
	if err := sv.cls.restore(&ss, now); err != nil {
		errs = append(errs, err)
	}
	for _, o := range ss.Outputs {
		f := os.NewFile(uintptr(o.FD), o.Stream)
		if sv.tail == nil {
			sv.tail = &tail{}
		}
		sv.readers = append(sv.readers, startReader(f, o.PID, o.Stream, sv.log.With().Int("pid", o.PID).Logger(), sv.tail))
	}
	if !sv.custody.empty() {
		sv.custody.rescan(now)
	}
	return errors.Join(errs...)
}

// restoreReadiness sets a handed-over instance's readiness. An image that
// knew no readiness handed over started instances, which are ready
// unless ready= says how to tell; a ready=fd: pipe does not survive the
// exec, so such an instance still starting is taken as ready.
func (sv *service) restoreReadiness(inst *instance, is InstanceState, now time.Time) {
	inst.ready, inst.readyBy, inst.late = is.Ready, is.ReadyBy, is.Late
	switch k := sv.conf.Ready.Kind; {
	case inst.ready || inst.asked || inst.launcher || sv.oneShot():
	case k == conffmt.ReadyStarted:
		inst.ready = true
	case k == conffmt.ReadyFD:
		inst.ready, inst.readyBy = true, time.Time{}
		sv.log.Info().Int("pid", inst.pid).Msg("ready=fd: cannot be followed across a re-exec: taken as ready")
	default:
		if inst.readyBy.IsZero() {
			inst.readyBy = now.Add(sv.conf.ReadyTimeout)
		}
		if k == conffmt.ReadyTCP || k == conffmt.ReadyExec {
			inst.probe = sv.tryReady(inst.pid, sv.conf.Ready.Probe)
		}
	}
}
