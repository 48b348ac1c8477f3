package netctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
		d, answer, ok := s.accept(st, buf[:n], from, now)
		if !ok {
			continue
		}
		var req Request
		if err := json.Unmarshal(d.Body, &req); err != nil {
			s.Log.Warn().Err(err).Stringer("from", from).Msg("bad network control request")
			if answer {
				s.reply(conn, from, d.ID, s.Handler.Fail(fmt.Errorf("bad request: %w", err)))
			}
			continue
		}
		if answer {
			log := s.Log.With().Stringer("from", from).
				Bool("relay", d.Flags&FlagRelay != 0).Bool("relayed", d.Flags&FlagRelayed != 0).Logger()
			reply, then := s.Handler.answer(log, req, ViaNetwork)
			s.reply(conn, from, d.ID, reply)
			if then != nil {
				then()
			}
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

// accept checks a datagram received at now. It returns the request, and
// whether to answer it, when ok. A datagram refused is logged,
// rate-limited; another copy of a request already answered is dropped
// quietly, unless it asks to be relayed: with several relays, one may get
// another's relayed copy first, and must still relay (ok, not to answer).
func (s *Server) accept(st *serverState, b []byte, from netip.AddrPort, now time.Time) (req *Datagram, answer, ok bool) {
	d, err := Decode(s.Key, b)
	switch {
	case err != nil:
	case d.Kind != KindRequest:
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
		return nil, false, false
	}
	first, err := st.answered.add(d.ID, now)
	if err == nil && first {
		return d, true, true
	}
	if err == nil && d.Flags&FlagRelay != 0 {
		s.Log.Debug().Stringer("from", from).Msg("request already answered: relaying it only")
		return d, false, true
	}
	s.Log.Debug().Stringer("from", from).AnErr("err", err).Msg("request already answered")
	return nil, false, false
}

// reply sends r to the requester as a reply to request id, in as many
// datagrams as it takes.
func (s *Server) reply(conn *net.UDPConn, to netip.AddrPort, id ID, r Reply) {
	body, err := json.Marshal(r)
	if err != nil {
		s.Log.Error().Err(err).Msg("cannot encode reply")
		return
	}
	parts, err := encodeParts(s.Key, KindReply, id, time.Now(), body)
	if err != nil {
		s.Log.Warn().Err(err).Stringer("to", to).Msg("cannot send whole reply")
		body, _ = json.Marshal(s.Handler.Fail(fmt.Errorf("reply of %d bytes is too large for network control", len(body))))
		if parts, err = encodeParts(s.Key, KindReply, id, time.Now(), body); err != nil {
			return
		}
	}
	for _, p := range parts {
		if _, err := conn.WriteToUDPAddrPort(p, to); err != nil {
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
	sock, err := listenGather("udp4", true)
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
	origins := make(map[netip.Addr]bool)
	sock.SetReadDeadline(deadline)
	buf := make([]byte, MaxDatagram+1)
	for {
		n, from, err := sock.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		origin := from.Addr().Unmap()
		r, err := Decode(s.Key, buf[:n])
		if err != nil || r.Kind != KindReply || r.ID != id || !fresh(r.Time, time.Now()) {
			s.Log.Debug().Stringer("from", from).AnErr("err", err).Msg("relay dropped a datagram")
			continue
		}
		if !origins[origin] && len(origins) >= maxOrigins {
			continue
		}
		fwd, err := encodeForward(s.Key, id, time.Now(), origin, buf[:n])
		if err == nil {
			_, err = conn.WriteToUDPAddrPort(fwd, requester)
		}
		if err != nil {
			s.Log.Warn().Err(err).Stringer("to", requester).Msg("cannot forward relayed reply")
			continue
		}
		origins[origin] = true
		end.Forwarded++
	}
	end.Hosts = len(origins)
	e := newDatagram(KindRelayEnd, id, time.Now())
	e.Body, _ = json.Marshal(end)
	if err := sendDatagram(conn, s.Key, e, requester); err != nil {
		s.Log.Warn().Err(err).Stringer("to", requester).Msg("cannot end relay")
	}
	s.Log.Info().Int("hosts", end.Hosts).Stringer("to", requester).Msg("relayed request")
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
