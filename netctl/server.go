package netctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Limits of a relay (docs/protocol.md).
const (
	// maxRelays is how many relayed requests one metad gathers at once.
	maxRelays = 4
	// minGather and maxGather bound how long a relay gathers replies,
	// whatever the request asks; defaultGather is for requests that do
	// not say.
	minGather     = 100 * time.Millisecond
	maxGather     = 10 * time.Second
	defaultGather = time.Second
	// maxOrigins bounds the hosts one relay forwards replies from.
	maxOrigins = 4096
	// endCopies is how many times a relay sends its end: it is one small
	// datagram, and were it lost metac would wait out its timeout and
	// report that replies may be missing.
	endCopies = 3
)

// relayEnd is the body of a relay-end datagram.
type relayEnd struct {
	Hosts     int `json:"hosts"`     // that answered the relay
	Forwarded int `json:"forwarded"` // datagrams sent to the requester
}

// Server answers network control requests. Its exported fields are set
// before Serve and not changed after.
type Server struct {
	Handler *Handler
	Key     []byte
	// Port is the port of network control on every host: a relay sends
	// its copies of a request there.
	Port int
	Log  zerolog.Logger
	// Broadcasts returns the addresses a relay sends its copies to; nil
	// means the broadcast address of every broadcast-capable interface.
	Broadcasts func() ([]netip.Addr, error)

	gate gate         // Quiesce
	conn *net.UDPConn // set by Serve, for Quiesce; guarded by gate.mu
	kept *keptReplies // set by Serve: replies kept for resends
}

// ListenNet opens the UDP socket of network control on port, on every
// address.
func ListenNet(port int) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: port})
	if err != nil {
		return nil, fmt.Errorf("cannot listen on UDP port %d: %w", port, err)
	}
	return c, nil
}

// NetFromFD takes over the UDP socket of network control that a previous
// image of metad handed over (re-exec).
func NetFromFD(fd int) (*net.UDPConn, error) {
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "network control")
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("cannot take over the network control socket: %w", err)
	}
	u, ok := c.(*net.UDPConn)
	if !ok {
		c.Close()
		return nil, errors.New("cannot take over the network control socket: not a UDP socket")
	}
	return u, nil
}

// Quiesce stops reading requests and waits until the ones read have been
// answered, relays included, or until ctx is done (then it returns ctx's
// error, quiesced all the same). Requests that arrive meanwhile wait in
// the socket's buffer for whoever reads next: this process after resume,
// or the next image of metad, which inherits the socket (re-exec). resume
// reads again; call it once. It needs Serve to be running.
func (s *Server) Quiesce(ctx context.Context) (resume func(), err error) {
	s.gate.mu.Lock()
	conn := s.conn
	s.gate.mu.Unlock()
	if conn == nil {
		return func() {}, nil // not serving yet
	}
	return s.gate.quiesce(ctx,
		func() { conn.SetReadDeadline(time.Now()) }, // wakes a pending read
		func() { conn.SetReadDeadline(time.Time{}) })
}

// Dup returns a duplicate of the socket Serve reads, without
// close-on-exec, to hand it to the next image of metad (re-exec).
func (s *Server) Dup() (int, error) {
	s.gate.mu.Lock()
	conn := s.conn
	s.gate.mu.Unlock()
	if conn == nil {
		return -1, errors.New("not serving")
	}
	return dupSocket(conn)
}

// serverState is owned by the goroutine of Serve that reads requests.
type serverState struct {
	nonces   *seen
	answered *seen // request ids: a host answers each once
	relayed  *seen // request ids: a relay relays each once
	refusals *limiter
}

// Serve answers the requests that arrive on conn until ctx is done, then
// closes conn and returns once every relay it started has finished.
// Requests that fail authentication or replay checks get no reply; they
// are logged, at most a few a second.
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn) {
	s.gate.mu.Lock()
	s.conn = conn
	s.gate.mu.Unlock()
	st := &serverState{
		nonces:   newSeen(seenFor, maxSeen),
		answered: newSeen(seenFor, maxSeen),
		relayed:  newSeen(seenFor, maxSeen),
		refusals: newLimiter(time.Second, 10),
	}
	s.kept = newKeptReplies()
	relays := make(chan struct{}, maxRelays)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	buf := make([]byte, MaxDatagram+1)
	for {
		s.gate.hold(ctx)
		if ctx.Err() != nil {
			break
		}
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if os.IsTimeout(err) { // Quiesce (or a resume that came first)
				continue
			}
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			s.Log.Error().Err(err).Msg("cannot read network control request")
			pause(ctx)
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		now := time.Now()
		d, act := s.accept(st, buf[:n], from, now)
		switch act {
		case actDrop:
			continue
		case actResend:
			s.resend(conn, d, from, now)
			continue
		case actAgain:
			s.again(conn, d, from, now)
			if d.Flags&FlagRelay == 0 {
				continue
			}
		}
		var req Request
		if err := json.Unmarshal(d.Body, &req); err != nil {
			s.Log.Warn().Err(err).Stringer("from", from).Msg("bad network control request")
			if act == actAnswer {
				s.reply(ctx, conn, from, d.ID, s.Handler.Fail(fmt.Errorf("bad request: %w", err)), 0, nil)
			}
			continue
		}
		if act == actAnswer {
			log := s.Log.With().Stringer("from", from).
				Bool("relay", d.Flags&FlagRelay != 0).Bool("relayed", d.Flags&FlagRelayed != 0).Logger()
			reply, then := s.Handler.answer(log, req, ViaNetwork)
			s.reply(ctx, conn, from, d.ID, reply, time.Duration(req.SpreadMS)*time.Millisecond, then)
		}
		if d.Flags&FlagRelay == 0 {
			continue
		}
		if first, err := st.relayed.add(d.ID, now); err != nil || !first {
			continue
		}
		select {
		case relays <- struct{}{}:
			id, body := d.ID, bytes.Clone(d.Body) // d.Body is in buf, which the next read reuses
			s.gate.begin()
			go func() {
				defer s.gate.end()
				defer func() { <-relays }()
				s.relay(ctx, conn, from, id, body, req.GatherMS)
			}()
		default:
			s.Log.Warn().Stringer("from", from).Int("relays", maxRelays).Msg("cannot relay request: too many relays under way")
		}
	}
	<-s.gate.answered()
}

// action is what the server does with a datagram that accept let in.
type action uint8

const (
	actDrop   action = iota
	actAnswer        // a request seen for the first time: carry it out
	actAgain         // another copy of a request answered: its reply again, to its requester only
	actResend        // a resend request
)

// accept checks a datagram received at now, and says what to do with it.
// A datagram refused is logged, rate-limited. Another copy of a request
// already answered is not carried out again: its requester gets the kept
// reply again (it lost the reply, or sent the copy before it arrived),
// and a copy that asks to be relayed is relayed all the same: with
// several relays, one may get another's relayed copy first, and must
// still relay.
func (s *Server) accept(st *serverState, b []byte, from netip.AddrPort, now time.Time) (*Datagram, action) {
	d, err := Decode(s.Key, b)
	switch {
	case err != nil:
	case d.Kind != KindRequest && d.Kind != KindResend:
		err = fmt.Errorf("a %s is not a request", d.Kind)
	case !fresh(d.Time, now):
		err = fmt.Errorf("time is %v off", now.Sub(d.Time).Round(time.Second))
	}
	if err == nil {
		var first bool
		if first, err = st.nonces.add(d.Nonce, now); err == nil && !first {
			err = errors.New("nonce seen before: a replay")
		}
	}
	if err != nil {
		if ok, suppressed := st.refusals.allow(now); ok {
			s.Log.Warn().Err(err).Stringer("from", from).Int("suppressed", suppressed).Msg("refused network control request")
		}
		return nil, actDrop
	}
	if d.Kind == KindResend {
		return d, actResend
	}
	first, err := st.answered.add(d.ID, now)
	if err == nil && first {
		return d, actAnswer
	}
	if err != nil {
		s.Log.Debug().Stringer("from", from).AnErr("err", err).Msg("request not answered")
		return nil, actDrop
	}
	s.Log.Debug().Stringer("from", from).Bool("relay", d.Flags&FlagRelay != 0).Msg("request already answered")
	return d, actAgain
}

// reply sends r to the requester as a reply to request id, in as many
// datagrams as it takes, paced, and keeps it for resends. With spread,
// it waits a random time up to spread first (bounded by maxSpread), so
// that the replies of a fleet to a broadcast do not all arrive at once;
// a reply with then is sent at once, and then runs once it is sent.
func (s *Server) reply(ctx context.Context, conn *net.UDPConn, to netip.AddrPort, id ID, r Reply, spread time.Duration, then func()) {
	body, err := json.Marshal(r)
	if err != nil {
		s.Log.Error().Err(err).Msg("cannot encode reply")
		return
	}
	bodies, err := splitBody(KindReply, body)
	if err != nil {
		s.Log.Warn().Err(err).Stringer("to", to).Msg("cannot send whole reply")
		body, _ = json.Marshal(s.Handler.Fail(fmt.Errorf("reply of %d bytes is too large for network control", len(body))))
		if bodies, err = splitBody(KindReply, body); err != nil {
			return
		}
	}
	parts := make([]keptPart, len(bodies))
	for i, b := range bodies {
		parts[i] = keptPart{uint16(i), len(bodies), b}
	}
	s.kept.keepOwn(id, to, bodies, time.Now())
	spread = min(spread, maxSpread)
	if spread <= 0 || then != nil {
		s.sendKept(conn, id, netip.Addr{}, to, parts)
		if then != nil {
			then()
		}
		return
	}
	delay := rand.N(spread)
	s.gate.begin()
	go func() {
		defer s.gate.end()
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
			s.sendKept(conn, id, netip.Addr{}, to, parts)
		case <-ctx.Done():
		}
	}()
}

// again sends the kept reply to request id again, whole, when from is
// its requester.
func (s *Server) again(conn *net.UDPConn, d *Datagram, from netip.AddrPort, now time.Time) {
	parts, err := s.kept.resend(keptKey{id: d.ID}, from, nil, now)
	if err != nil {
		s.Log.Debug().Err(err).Stringer("from", from).Msg("reply not sent again")
		return
	}
	s.sendKept(conn, d.ID, netip.Addr{}, from, parts)
}

// resend answers a resend request: the parts it asks for of this metad's
// reply, or of a reply it forwarded as a relay, when from is the
// requester of that reply and has not asked too often.
func (s *Server) resend(conn *net.UDPConn, d *Datagram, from netip.AddrPort, now time.Time) {
	origin, want, _ := decodeResend(d.Body) // Decode checked it
	if origin == allOrigins {
		all := s.kept.resendAll(d.ID, from, now)
		s.Log.Debug().Stringer("from", from).Int("hosts", len(all)).Msg("resent every forwarded reply")
		for o, parts := range all {
			s.sendKept(conn, d.ID, o, from, parts)
		}
		return
	}
	parts, err := s.kept.resend(keptKey{d.ID, origin}, from, want, now)
	if err != nil {
		s.Log.Debug().Err(err).Stringer("from", from).Msg("resend not honoured")
		return
	}
	s.Log.Debug().Stringer("from", from).Int("parts", len(parts)).Msg("resent reply parts")
	s.sendKept(conn, d.ID, origin, from, parts)
}

// sendKept sends parts of a kept reply to request id to to, paced: this
// metad's own reply when origin is not valid, else forwards of origin's.
// Each datagram is made afresh: new nonce, time now.
func (s *Server) sendKept(conn *net.UDPConn, id ID, origin netip.Addr, to netip.AddrPort, parts []keptPart) {
	for i, p := range parts {
		if i > 0 {
			time.Sleep(partGap)
		}
		var b []byte
		var err error
		if origin.IsValid() {
			b, err = encodeForward(s.Key, id, time.Now(), origin, p.b)
		} else {
			b, err = encodePart(s.Key, KindReply, id, time.Now(), int(p.index), p.parts, p.b)
		}
		if err == nil {
			_, err = conn.WriteToUDPAddrPort(b, to)
		}
		if err != nil {
			s.Log.Warn().Err(err).Stringer("to", to).Msg("cannot send reply")
			return
		}
	}
}

// relay broadcasts a copy of request id, whose body is body, on this
// host's subnets, and forwards every authenticated reply to the requester
// until the gather time is over; then it tells the requester it is done.
func (s *Server) relay(ctx context.Context, conn *net.UDPConn, requester netip.AddrPort, id ID, body []byte, gatherMS int64) {
	gather := defaultGather
	if gatherMS > 0 {
		gather = min(max(time.Duration(gatherMS)*time.Millisecond, minGather), maxGather)
	}
	deadline := time.Now().Add(gather)
	broadcasts := s.Broadcasts
	if broadcasts == nil {
		broadcasts = BroadcastAddrs
	}
	targets, err := broadcasts()
	if err != nil {
		s.Log.Warn().Err(err).Msg("cannot find every broadcast address to relay to")
	}
	sock, err := listenGather("udp4", true, recvBufferFor(maxOrigins))
	if err != nil {
		s.Log.Error().Err(err).Msg("cannot relay request")
		return
	}
	defer sock.Close()
	stop := context.AfterFunc(ctx, func() { sock.SetReadDeadline(time.Now()) })
	defer stop()
	for _, t := range targets {
		c := newDatagram(KindRequest, id, time.Now())
		c.Flags, c.Body = FlagRelayed, body
		if err := sendDatagram(sock, s.Key, c, netip.AddrPortFrom(t, uint16(s.Port))); err != nil {
			s.Log.Warn().Err(err).Stringer("to", t).Msg("cannot relay request")
		}
	}
	var end relayEnd
	origins := make(map[netip.Addr]*relayOrigin)
	buf := make([]byte, MaxDatagram+1)
	next := time.Now().Add(askAfter)
	for ctx.Err() == nil {
		now := time.Now()
		if !now.Before(deadline) {
			break
		}
		if !now.Before(next) {
			s.askOrigins(sock, id, origins, now)
			next = now.Add(askAfter)
		}
		sock.SetReadDeadline(earlier(deadline, next))
		n, from, err := sock.ReadFromUDPAddrPort(buf)
		if err != nil {
			if os.IsTimeout(err) {
				continue
			}
			break
		}
		now = time.Now()
		origin := from.Addr().Unmap()
		r, err := Decode(s.Key, buf[:n])
		if err != nil || r.Kind != KindReply || r.ID != id || !fresh(r.Time, now) {
			s.Log.Debug().Stringer("from", from).AnErr("err", err).Msg("relay dropped a datagram")
			continue
		}
		o := origins[origin]
		if o == nil {
			if len(origins) >= maxOrigins {
				continue
			}
			o = &relayOrigin{from: from}
			origins[origin] = o
		}
		if !o.parts.add(r.Part, r.Parts, now) {
			continue // a copy, or not a part of this reply
		}
		s.kept.keepForward(id, origin, requester, r.Part, r.Parts, buf[:n], now)
		fwd, err := encodeForward(s.Key, id, now, origin, buf[:n])
		if err == nil {
			_, err = conn.WriteToUDPAddrPort(fwd, requester)
		}
		if err != nil {
			s.Log.Warn().Err(err).Stringer("to", requester).Msg("cannot forward relayed reply")
			continue
		}
		end.Forwarded++
	}
	end.Hosts = len(origins)
	body, _ = json.Marshal(end)
	for range endCopies {
		e := newDatagram(KindRelayEnd, id, time.Now())
		e.Body = body
		if err := sendDatagram(conn, s.Key, e, requester); err != nil {
			s.Log.Warn().Err(err).Stringer("to", requester).Msg("cannot end relay")
			break
		}
	}
	s.Log.Info().Int("hosts", end.Hosts).Stringer("to", requester).Msg("relayed request")
}

// relayOrigin is a host whose reply a relay forwards.
type relayOrigin struct {
	from  netip.AddrPort
	parts partSet
}

// askOrigins asks each origin whose reply to request id is incomplete for
// the parts the relay lacks, when it is time to.
func (s *Server) askOrigins(sock *net.UDPConn, id ID, origins map[netip.Addr]*relayOrigin, now time.Time) {
	for _, o := range origins {
		if !o.parts.due(now) {
			continue
		}
		d := newDatagram(KindResend, id, now)
		d.Body = o.parts.ask(netip.Addr{}, now)
		if err := sendDatagram(sock, s.Key, d, o.from); err != nil {
			s.Log.Debug().Err(err).Stringer("to", o.from).Msg("cannot ask for missing parts")
		}
	}
}

// sendDatagram encodes d and sends it to to.
func sendDatagram(conn *net.UDPConn, key []byte, d *Datagram, to netip.AddrPort) error {
	b, err := Encode(key, d)
	if err != nil {
		return err
	}
	_, err = conn.WriteToUDPAddrPort(b, to)
	return err
}
