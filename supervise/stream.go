package supervise

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"metad/conffmt"
)

// Stream admission (SPEC §4, §11) is decided by the service goroutine
// alone. It counts the slots in use as its instances plus the slots held
// by crashes, both of which it owns, so the count cannot drift whatever
// happens (crashes, reloads of max, disable, stop, re-exec). It accepts
// connections itself, without blocking, while a slot is free; when the
// socket has no connection waiting it arms its acceptor, a helper
// goroutine that only waits in the netpoller for the socket to become
// readable and says so with a non-blocking wake-up. The acceptor gives
// nothing back and shares no counter: stopping it is closing its stop
// channel, and it never blocks on anything but the netpoller and that
// channel. Each connection accepted is screened by admission (only_from,
// per_source, rate=; see admission.go) in the same goroutine: a refused
// one is closed at once and takes no slot, so the service goes on
// accepting and serving the others.

// remote is a stream instance's client.
type remote struct {
	addr netip.Addr
	port int
}

func (r remote) valid() bool { return r.addr.IsValid() }

// conn is an accepted connection on its way to a stream instance.
type conn struct {
	fd     int // -1 for connections of a fake socket in tests
	remote remote
	local  remote // zero when the socket knows no more than its endpoint
}

// errNoConn is what streamSocket.accept returns when no connection waits.
var errNoConn = errors.New("no connection waiting")

// streamSocket is a stream service's listening socket.
type streamSocket interface {
	// accept takes a waiting connection without blocking, or returns
	// errNoConn.
	accept() (conn, error)
	// wait blocks until a connection may be waiting, or until stop is
	// closed or the socket is closed (then it returns an error). Only the
	// acceptor calls it.
	wait(stop <-chan struct{}) error
	// dup returns a duplicate of the descriptor without close-on-exec,
	// for the next image of metad.
	dup() (int, error)
	// close closes the socket and wakes a wait.
	close() error
}

// sockets opens stream sockets: the real ones, or fakes in tests.
type sockets interface {
	// open binds a new listening socket on e.
	open(e Endpoint, backlog int) (streamSocket, error)
	// take wraps a listening descriptor metad was given (inherited or
	// handed over); it owns fd from then on, even on error.
	take(fd int, e Endpoint) (streamSocket, error)
}

// netSockets is the real sockets.
type netSockets struct{}

func (netSockets) open(e Endpoint, backlog int) (streamSocket, error) {
	fd, err := listen(e, backlog)
	if err != nil {
		return nil, err
	}
	return netSockets{}.take(fd, e)
}

func (netSockets) take(fd int, e Endpoint) (streamSocket, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("cannot make socket %s non-blocking: %w", e, err)
	}
	f := os.NewFile(uintptr(fd), e.String())
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot poll socket %s: %w", e, err)
	}
	return &netSocket{f: f, rc: rc, wildcard: !e.Addr.IsValid() || e.Addr.IsUnspecified()}, nil
}

// netSocket is a listening TCP socket in Go's netpoller.
type netSocket struct {
	f        *os.File
	rc       syscall.RawConn
	wildcard bool // bound to every address: each connection's local address is asked for
}

func (s *netSocket) accept() (conn, error) {
	c := conn{fd: -1}
	var err error
	cerr := s.rc.Control(func(fd uintptr) {
		var sa syscall.Sockaddr
		// syscall's Accept4, not unix's: that one asks getsockopt for
		// the protocol of every connection.
		for {
			c.fd, sa, err = syscall.Accept4(int(fd), syscall.SOCK_CLOEXEC)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		if err == nil {
			c.remote.addr, c.remote.port = sockaddrIP(sa)
		}
	})
	switch {
	case cerr != nil:
		return c, cerr
	case errors.Is(err, syscall.EAGAIN):
		return c, errNoConn
	case err != nil:
		return c, err
	}
	if s.wildcard {
		if sa, err := syscall.Getsockname(c.fd); err == nil {
			c.local.addr, c.local.port = sockaddrIP(sa)
		}
	}
	return c, nil
}

// wait returns when the socket is readable. The readiness check runs
// inside RawConn.Read, after the netpoller has been reset for the wait,
// so a connection that arrives after it wakes the wait: none is missed.
func (s *netSocket) wait(stop <-chan struct{}) error {
	return s.rc.Read(func(fd uintptr) bool {
		select {
		case <-stop:
			return true
		default:
		}
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		return err == nil && n > 0
	})
}

func (s *netSocket) dup() (int, error) {
	nfd := -1
	var err error
	if cerr := s.rc.Control(func(fd uintptr) { nfd, err = unix.Dup(int(fd)) }); cerr != nil {
		return -1, cerr
	}
	return nfd, err
}

func (s *netSocket) close() error { return s.f.Close() }

// acceptor waits for connections on behalf of the service goroutine; see
// the comment at the top of this file.
type acceptor struct {
	rearm chan struct{} // one slot: from the service, wait for readability once
	stop  chan struct{}
	ended chan struct{} // closed when the goroutine has returned
}

func (a *acceptor) run(sock streamSocket, readable chan<- struct{}) {
	defer close(a.ended)
	for {
		select {
		case <-a.rearm:
		case <-a.stop:
			return
		}
		if err := sock.wait(a.stop); err != nil {
			return // closed
		}
		select {
		case <-a.stop:
			return
		default:
		}
		nudge(readable)
	}
}

// nudge sends on ch, a channel of one slot, without blocking: a wake-up
// already pending stands for this one.
func nudge(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// acceptBatch bounds the connections accepted in one go, so that exits
// and requests are not kept waiting behind a flood.
const acceptBatch = 64

// acceptRetry is the pause after an accept error that is not about one
// connection (EMFILE, ENFILE, ENOBUFS): the socket stays readable, and
// retrying at once would spin.
const acceptRetry = 100 * time.Millisecond

// Per-address records (SPEC §11). maxSources bounds their number; a
// record is forgotten once its hold has passed by more than the
// service's backoff ceiling, or when the table is full and it is the one
// whose hold ends first.
const maxSources = 1024

// source is what admission remembers of one client address.
type source struct {
	crashes int       // crashes in a row of instances serving this address
	until   time.Time // end of its backoff delay
}

// hold is a slot held by a crashed instance until a time: the one slot
// of a client address, or one of the service's own (crashes from
// several addresses).
type hold struct {
	until   time.Time
	addr    netip.Addr
	service bool
}

// streamClass is the class rule of stream services: one instance per accepted
// connection, at most max slots in use (instances plus held slots).
type streamClass struct {
	sv       *service
	sock     streamSocket // nil while closed
	acc      *acceptor    // nil while not accepting
	readable chan struct{}
	armed    bool      // the acceptor waits for readability, or has said so
	retryAt  time.Time // after an accept error: when to accept again
	held     []hold
	sources  map[netip.Addr]*source
	// The streak of crashes in a row, service-wide: the first address in
	// it, and whether another address has crashed in it since.
	streakAddr netip.Addr
	several    bool
	adm        admission
}

func newStream(sv *service) *streamClass {
	return &streamClass{sv: sv, readable: make(chan struct{}, 1), sources: make(map[netip.Addr]*source)}
}

// used is the slots in use: instances and held slots.
func (s *streamClass) used() int { return len(s.sv.instances) + len(s.held) }

func (s *streamClass) plan(p *plan) {
	p.open = s.sock != nil
}

func (s *streamClass) start(now time.Time, why reason) error {
	if why != forListen || s.sock != nil {
		return nil
	}
	sv := s.sv
	var err error
	if fd := sv.inheritedFD; fd >= 0 {
		sv.inheritedFD = -1
		sv.log.Info().Stringer("addr", sv.endpoint()).Msg("using inherited socket")
		s.sock, err = sv.sup.sockets.take(fd, sv.endpoint())
	} else {
		s.sock, err = sv.sup.sockets.open(sv.endpoint(), sv.conf.Backlog)
	}
	if err != nil {
		s.sock = nil
		return err
	}
	sv.log.Info().Stringer("addr", sv.endpoint()).Msg("listening")
	s.startAcceptor()
	return nil
}

// startAcceptor starts the acceptor goroutine, armed: connections
// already waiting wake the service at once.
func (s *streamClass) startAcceptor() {
	a := &acceptor{rearm: make(chan struct{}, 1), stop: make(chan struct{}), ended: make(chan struct{})}
	s.acc, s.armed = a, true
	nudge(a.rearm)
	go a.run(s.sock, s.readable)
}

// stopAcceptor stops the acceptor without waiting: it returns by itself
// at its next wake-up, which closing its stop channel gives it (the
// socket's close wakes a wait in the netpoller).
func (s *streamClass) stopAcceptor() *acceptor {
	a := s.acc
	if a != nil {
		close(a.stop)
		s.acc, s.armed = nil, false
	}
	return a
}

// close stops accepting and closes the socket: clients are refused from
// now on. Held slots and address records stay: they expire by time.
func (s *streamClass) close() {
	if s.sock == nil {
		return
	}
	a := s.stopAcceptor()
	s.sock.close()
	s.sock = nil
	if a != nil {
		waitEnded(a.ended, s.sv, "acceptor")
	}
	s.sv.log.Info().Stringer("addr", s.sv.endpoint()).Msg("closed socket")
}

// waitEnded waits, bounded, for a helper goroutine that has been told to
// end and does so at once; a helper that does not is logged.
func waitEnded(ended <-chan struct{}, sv *service, what string) {
	select {
	case <-ended:
	case <-time.After(helperPatience):
		sv.log.Error().Str("helper", what).Msg("helper goroutine did not end")
	}
}

// helperPatience bounds the wait for a helper goroutine (acceptor,
// watcher, output reader) told to end, which it does within microseconds.
const helperPatience = 2 * time.Second

// admit accepts and serves connections while slots are free, and arms
// the acceptor when none is waiting. At max it does neither: clients wait
// in the kernel's backlog until a slot frees and admit runs again.
func (s *streamClass) admit(now time.Time) {
	sv := s.sv
	if s.sock == nil || s.acc == nil || !sv.active() || now.Before(s.retryAt) {
		return
	}
	for n := 0; s.used() < sv.conf.Max; n++ {
		if n == acceptBatch {
			nudge(s.readable) // more after the other events
			return
		}
		c, err := s.sock.accept()
		switch {
		case err == nil:
			if s.screen(now, c) {
				s.serve(now, c)
			} else {
				closeFD(c.fd)
			}
			continue
		case errors.Is(err, errNoConn):
			if !s.armed {
				s.armed = true
				nudge(s.acc.rearm)
			}
			return
		case errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPROTO), errors.Is(err, syscall.EPERM):
			continue // that connection only
		default:
			sv.log.Error().Err(err).Msg("cannot accept")
			s.retryAt = now.Add(acceptRetry)
			return
		}
	}
}

// screen applies admission to an accepted connection and reports whether
// it may be served; a refusal is counted and logged at a limited rate.
func (s *streamClass) screen(now time.Time, c conn) bool {
	live := 0
	if s.sv.conf.PerSource > 0 {
		live = s.taken(c.remote.addr)
	}
	r := s.adm.decide(&s.sv.conf, c.remote.addr, now, live)
	if r == admitted {
		return true
	}
	if line, ok := s.adm.noteRefusal(r, c.remote.addr, now); ok {
		s.logRefusals(line)
	}
	return false
}

// taken is what addr takes of the service under per_source: its
// instances and the slot its crashes hold. Counted, like the slots in
// use, so that it cannot drift.
func (s *streamClass) taken(addr netip.Addr) int {
	n := 0
	for _, inst := range s.sv.instances {
		if inst.remote.addr == addr {
			n++
		}
	}
	for _, h := range s.held {
		if !h.service && h.addr == addr {
			n++
		}
	}
	return n
}

// logRefusals logs the connections one rule refused since its last line.
func (s *streamClass) logRefusals(l refusalLine) {
	s.sv.log.Warn().Stringer("rule", l.rule).Int("refused", l.refused).Str("remote", l.last.String()).Msg("refused")
}

// serve starts a stream instance for an accepted connection: the
// connection is its fd 0 and 1, with the ucspi-tcp environment.
func (s *streamClass) serve(now time.Time, c conn) {
	sv := s.sv
	defer closeFD(c.fd)
	local := c.local
	if !local.valid() {
		local = remote{addr: sv.conf.Addr, port: sv.conf.Port}
	}
	env := []string{
		"PROTO=TCP",
		"TCPREMOTEIP=" + c.remote.addr.String(),
		"TCPREMOTEPORT=" + strconv.Itoa(c.remote.port),
		"TCPLOCALIP=" + local.addr.String(),
		"TCPLOCALPORT=" + strconv.Itoa(local.port),
	}
	inst, err := sv.launch(now, []int{c.fd, c.fd, sv.sup.stderr}, env, c.remote)
	if err != nil {
		sv.log.Error().Err(err).Str("remote", c.remote.addr.String()).Msg("cannot start")
		sv.startErr = startError{err: err.Error(), at: now}
		s.crashed(now, c.remote.addr)
		return
	}
	sv.log.Debug().Int("pid", inst.pid).Str("remote", c.remote.addr.String()).Int("port", c.remote.port).Msg("started")
}

// ended handles the end of a stream instance: its slot is given back, or
// held by a crash.
func (s *streamClass) ended(inst *instance, end ending) {
	now := end.exit.Time
	switch end.outcome {
	case Crashed:
		if !end.asked {
			s.sv.restarts++
		}
		s.crashed(now, inst.remote.addr)
	case PeerGone:
	case Failed:
		if !end.asked {
			s.sv.restarts++
		}
		s.cleared(inst.remote.addr)
	default:
		s.cleared(inst.remote.addr)
	}
	// retries= counts the service-wide crashes only, those that came from
	// several addresses: no one client can make the service fail.
	s.sv.policy(end)
	s.admit(now)
}

// cleared forgets the crashes of addr and ends the service-wide streak:
// a run that did not crash.
func (s *streamClass) cleared(addr netip.Addr) {
	delete(s.sources, addr)
	s.streakAddr, s.several = netip.Addr{}, false
	s.sv.backoff.reset()
}

// crashed holds a slot after a crash of an instance serving addr. Each
// address holds at most one slot of its own, kept for its own backoff
// delay (a later crash from it extends that hold), so that one client,
// however hostile, takes at most one slot from the others. The crash
// counts toward the service-wide backoff only once the streak of crashes
// in a row comes from more than one address: then it holds a slot of its
// own for the longer of the two delays, which is how a program broken
// for everyone throttles itself.
func (s *streamClass) crashed(now time.Time, addr netip.Addr) {
	sv := s.sv
	src := s.record(now, addr)
	src.crashes++
	d := Delay(src.crashes, sv.conf.Backoff)
	src.until = now.Add(d)
	switch {
	case !s.streakAddr.IsValid():
		s.streakAddr = addr
	case s.streakAddr != addr:
		s.several = true
	}
	if s.several {
		if sd := sv.backoff.record(now, Crashed, sv.conf.Backoff); sd > d {
			d = sd
		}
		s.held = append(s.held, hold{until: now.Add(d), addr: addr, service: true})
	} else if i := slices.IndexFunc(s.held, func(h hold) bool { return !h.service && h.addr == addr }); i >= 0 {
		s.held[i].until = later(s.held[i].until, now.Add(d))
	} else {
		s.held = append(s.held, hold{until: now.Add(d), addr: addr})
	}
	sv.log.Warn().Str("remote", addr.String()).Int("crashes", src.crashes).Int("service_crashes", sv.backoff.crashes).Stringer("delay", d).Msg("backoff")
}

// record returns addr's record, making room for it if need be.
func (s *streamClass) record(now time.Time, addr netip.Addr) *source {
	if src := s.sources[addr]; src != nil {
		return src
	}
	if len(s.sources) >= maxSources {
		s.expire(now)
	}
	if len(s.sources) >= maxSources {
		var oldest netip.Addr
		var first time.Time
		for a, src := range s.sources {
			if first.IsZero() || src.until.Before(first) {
				oldest, first = a, src.until
			}
		}
		delete(s.sources, oldest)
	}
	src := &source{}
	s.sources[addr] = src
	return src
}

// expire forgets the records whose hold passed more than the backoff
// ceiling ago.
func (s *streamClass) expire(now time.Time) {
	for a, src := range s.sources {
		if now.Sub(src.until) > s.sv.conf.Backoff {
			delete(s.sources, a)
		}
	}
}

func (s *streamClass) deadline() time.Time {
	var t time.Time
	for _, h := range s.held {
		t = earliest(t, h.until)
	}
	if s.acc != nil && !s.retryAt.IsZero() {
		t = earliest(t, s.retryAt)
	}
	return earliest(t, s.adm.logDeadline())
}

// tick gives back the slots whose hold has passed and accepts again.
func (s *streamClass) tick(now time.Time) {
	kept := s.held[:0]
	for _, h := range s.held {
		if now.Before(h.until) {
			kept = append(kept, h)
		}
	}
	s.held = kept
	if !s.retryAt.IsZero() && !now.Before(s.retryAt) {
		s.retryAt = time.Time{}
	}
	if len(s.sources) > 0 && len(s.held) == 0 {
		s.expire(now)
	}
	for r := range ruleCount {
		if line, ok := s.adm.due(r, now); ok {
			s.logRefusals(line)
		}
	}
	s.admit(now)
}

func (s *streamClass) stopped() {}

func (s *streamClass) wakeup() <-chan struct{} { return s.readable }

// woke: the acceptor saw the socket readable.
func (s *streamClass) woke(now time.Time) {
	s.armed = false
	s.admit(now)
}

// update applies a new config: a new address, port or backlog reopens
// the socket; a new max takes effect at once, since the slots in use are
// counted, not stored, and so do new admission limits, which are read at
// each connection (a new rate starts every address with a full bucket).
// Running instances serve their connections to the end, even those a new
// per_source or only_from would refuse; new connections get the new
// settings.
func (s *streamClass) update(old *conffmt.Service, now time.Time) bool {
	c := &s.sv.conf
	if old.Addr != c.Addr || old.Port != c.Port || old.Backlog != c.Backlog {
		s.sv.closeSockets() // reconcile opens the new one
	}
	s.adm.changed(old, c)
	s.admit(now)
	return false
}

func (s *streamClass) status(st *Status, now time.Time) {
	st.Held = len(s.held)
	st.Refused = s.adm.refused
}

// freeze stops the acceptor for a handover; the socket stays open.
func (s *streamClass) freeze() {
	if a := s.stopAcceptor(); a != nil {
		waitEnded(a.ended, s.sv, "acceptor")
	}
}

func (s *streamClass) thaw() {
	if s.sock != nil && s.acc == nil && s.sv.active() {
		s.startAcceptor()
	}
}

// snapshot hands over the socket and the held slots. Admission's token
// buckets are not handed over: the next image starts every address with
// a full bucket (see admission).
func (s *streamClass) snapshot(ss *ServiceState) {
	if s.adm.refused != (Refused{}) {
		r := s.adm.refused
		ss.Refused = &r
	}
	if s.sock != nil {
		fd, err := s.sock.dup()
		if err != nil {
			s.sv.log.Error().Err(err).Msg("cannot hand over a descriptor")
			fd = -1
		}
		ss.Socket = fd
	}
	for _, h := range s.held {
		from := h.addr.String()
		if h.service {
			from = "service:" + from
		}
		ss.Held = append(ss.Held, h.until)
		ss.HeldFrom = append(ss.HeldFrom, from)
	}
}

func (s *streamClass) restore(ss *ServiceState, now time.Time) error {
	if ss.Refused != nil {
		s.adm.refused = *ss.Refused // the buckets are not handed over: they start full
	}
	for i, t := range ss.Held {
		h := hold{until: t, service: true}
		if i < len(ss.HeldFrom) {
			from, service := strings.CutPrefix(ss.HeldFrom[i], "service:")
			h.addr, _ = netip.ParseAddr(from)
			h.service = service || !h.addr.IsValid()
		}
		s.held = append(s.held, h)
		if h.addr.IsValid() {
			src := s.record(now, h.addr)
			src.crashes++
			src.until = later(src.until, t)
		}
	}
	if ss.Socket < 0 {
		return nil
	}
	sock, err := s.sv.sup.sockets.take(ss.Socket, s.sv.endpoint())
	if err != nil {
		return fmt.Errorf("cannot take socket %s: %w", s.sv.endpoint(), err)
	}
	s.sock = sock
	if s.sv.active() {
		s.startAcceptor()
	}
	return nil
}

func (s *streamClass) idle() bool { return s.acc == nil }
