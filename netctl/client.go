package netctl

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// relayGrace is how long metac waits for the relays beyond the gather
// time it asked for: their own work and the trip back.
const relayGrace = 2 * time.Second

// maxGathered bounds the reply bytes metac keeps from one request.
const maxGathered = 256 << 20

// Target says where a network request goes: to named hosts, or
// broadcast, or through relays that broadcast. Give Hosts or Broadcast,
// not both; Relays need Broadcast without BroadcastTo.
type Target struct {
	Hosts       []string   // each as HOST or HOST:PORT
	Broadcast   bool       // to every metad on the local subnets
	BroadcastTo netip.Addr // with Broadcast: to this broadcast address only; zero: every interface's
	// Relays, with Broadcast: each broadcasts on its own subnets instead
	// (each as HOST or HOST:PORT). They all carry one request: a host
	// that more than one reaches carries it out once.
	Relays []string
	Port   int // of network control, for hosts that name none
	// Timeout bounds the wait for replies. A broadcast gathers replies
	// for all of it; relays gather for as long, and are given a little
	// more to send them.
	Timeout time.Duration
}

// Answer is what one host answered, or why it did not.
type Answer struct {
	// Host is the host as the Target names it, or, for a broadcast, the
	// address the reply came from.
	Host  string
	Reply *Reply // nil when no whole reply arrived
	Err   string // when Reply is nil: "no answer", "incomplete reply..."
}

// Outcome is what came back from a network request.
type Outcome struct {
	// Answers has the named hosts in the order given; else the relays
	// first, in the order given, then the other hosts by address. Each
	// host is there once.
	Answers []Answer
	// Problems says what may be missing from the relays' gathering, one
	// line each, naming the relay.
	Problems []string
}

// message is a reply being put together from its parts.
type message struct {
	parts [][]byte
	got   int
}

func (m *message) complete() bool { return m.parts != nil && m.got == len(m.parts) }

// gather collects the replies to a network request. It is used by one
// goroutine.
type gather struct {
	key    []byte
	labels map[ID]string // host named by request id: -h hosts
	bcast  ID            // broadcast request: hosts named by address
	relay  ID            // relayed request, the same to every relay: forwards name their origin
	mode   gatherMode
	msgs   map[string]*message
	order  []string // hosts, in the order their first datagram arrived
	// The relays, in the order given, and by address: a relay's own
	// reply, its forwards and its end come from it, and a forward from
	// one relay may carry another's reply.
	relays  []string
	relayAt map[netip.Addr]string
	ends    map[string]*relayEnd // by relay
	fwds    map[string]int       // forward datagrams accepted, by relay
	bytes   int
}

type gatherMode uint8

const (
	gatherHosts     gatherMode = iota // until every host answered
	gatherBroadcast                   // until the deadline
	gatherRelay                       // until the relay says it is done
)

func newGather(key []byte, mode gatherMode) *gather {
	return &gather{key: key, mode: mode, labels: make(map[ID]string), msgs: make(map[string]*message),
		relayAt: make(map[netip.Addr]string), ends: make(map[string]*relayEnd), fwds: make(map[string]int)}
}

// addRelay adds a relay, named name, at address at.
func (g *gather) addRelay(name string, at netip.Addr) {
	if !slices.Contains(g.relays, name) {
		g.relays = append(g.relays, name)
	}
	g.relayAt[at.Unmap()] = name
}

// sender names the host a datagram came from, in relay mode: with one
// relay, every datagram sent to metac is the relay's, whichever of its
// addresses it came from; with more, a relay is known by the address it
// was asked at, and anything else by its address.
func (g *gather) sender(from netip.Addr) string {
	if len(g.relays) == 1 {
		return g.relays[0]
	}
	return g.hostAt(from)
}

// hostAt names the host at addr: a relay by its name, else the address.
func (g *gather) hostAt(addr netip.Addr) string {
	if r, ok := g.relayAt[addr]; ok {
		return r
	}
	return addr.String()
}

// Call sends req to t, authenticated with key, and gathers the replies
// until each named host has answered in full, the relay is done, or the
// timeout is over. Its error is a local one: a target that is not valid,
// a host name that does not resolve, no socket, no interface; a host that
// does not answer is an Answer.
func Call(key []byte, t Target, req Request) (*Outcome, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	g, err := callNet(key, t, req)
	if err != nil {
		return nil, err
	}
	return &Outcome{Answers: g.results(t), Problems: g.relayProblems()}, nil
}

// check validates the combination of targets.
func (t Target) check() error {
	switch {
	case len(t.Hosts) > 0 && t.Broadcast:
		return errors.New("cannot send to hosts and broadcast at once")
	case len(t.Hosts) == 0 && !t.Broadcast:
		return errors.New("cannot send a request to no host")
	case len(t.Relays) > 0 && !t.Broadcast:
		return errors.New("cannot relay without a broadcast: the relay broadcasts the request")
	case len(t.Relays) > 0 && t.BroadcastTo.IsValid():
		return errors.New("cannot relay to a broadcast address: the relay broadcasts on its own subnets")
	case t.Timeout <= 0:
		return errors.New("cannot wait for replies: no timeout")
	}
	return nil
}

// callNet sends req to t and gathers the replies.
func callNet(key []byte, t Target, req Request) (*gather, error) {
	bcast := t.Broadcast && len(t.Relays) == 0 // broadcast from here
	network := "udp"
	if bcast {
		network = "udp4"
	}
	sock, err := listenGather(network, bcast)
	if err != nil {
		return nil, err
	}
	defer sock.Close()
	now := time.Now()
	deadline := now.Add(t.Timeout)
	var g *gather
	var sends []send
	switch {
	case len(t.Relays) > 0:
		g = newGather(key, gatherRelay)
		g.relay = newID()
		req.GatherMS = t.Timeout.Milliseconds()
		for _, r := range t.Relays {
			to, err := resolve(r, t.Port)
			if err != nil {
				return nil, err
			}
			g.addRelay(r, to.Addr())
			sends = append(sends, send{to, g.relay, FlagRelay})
		}
		deadline = deadline.Add(relayGrace)
	case t.Broadcast:
		g = newGather(key, gatherBroadcast)
		g.bcast = newID()
		addrs := []netip.Addr{t.BroadcastTo}
		if !t.BroadcastTo.IsValid() {
			if addrs, err = BroadcastAddrs(); err != nil {
				return nil, err
			}
			if len(addrs) == 0 {
				return nil, errors.New("cannot broadcast: no interface is up with an IPv4 broadcast address")
			}
		}
		for _, a := range addrs {
			sends = append(sends, send{netip.AddrPortFrom(a, uint16(t.Port)), g.bcast, 0})
		}
	default:
		g = newGather(key, gatherHosts)
		for _, h := range t.Hosts {
			to, err := resolve(h, t.Port)
			if err != nil {
				return nil, err
			}
			id := newID()
			g.labels[id] = h
			sends = append(sends, send{to, id, 0})
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	for _, s := range sends {
		d := newDatagram(KindRequest, s.id, time.Now())
		d.Flags, d.Body = s.flags, body
		if err := sendDatagram(sock, key, d, s.to); err != nil {
			return nil, fmt.Errorf("cannot send request to %s: %w", s.to, err)
		}
	}
	g.receive(sock, deadline)
	return g, nil
}

// send is one request datagram to send.
type send struct {
	to    netip.AddrPort
	id    ID
	flags Flags
}

// resolve returns the address of HOST or HOST:PORT, with port when the
// host names none.
func resolve(host string, port int) (netip.AddrPort, error) {
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		h, p = host, strconv.Itoa(port)
	}
	a, err := net.ResolveUDPAddr("udp", net.JoinHostPort(h, p))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("cannot resolve host %q: %w", host, err)
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// receive reads datagrams from sock until the deadline, or until every
// reply it waits for is whole.
func (g *gather) receive(sock *net.UDPConn, deadline time.Time) {
	sock.SetReadDeadline(deadline)
	buf := make([]byte, MaxDatagram+1)
	for !g.done() {
		n, from, err := sock.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		g.accept(buf[:n], from.Addr().Unmap(), time.Now())
	}
}

// accept takes a datagram from a host at now. Datagrams that fail
// authentication, are stale, or answer another request are dropped.
func (g *gather) accept(b []byte, from netip.Addr, now time.Time) {
	d, err := Decode(g.key, b)
	if err != nil || !fresh(d.Time, now) {
		return
	}
	switch {
	case d.Kind == KindReply && g.labels[d.ID] != "":
		g.add(g.labels[d.ID], d)
	case d.Kind == KindReply && d.ID == g.bcast && g.mode == gatherBroadcast:
		g.add(from.String(), d)
	case d.Kind == KindReply && d.ID == g.relay && g.mode == gatherRelay:
		g.add(g.sender(from), d)
	case d.Kind == KindForward && d.ID == g.relay && g.mode == gatherRelay:
		origin, inner := d.forwarded()
		r, err := Decode(g.key, inner)
		if err != nil || r.Kind != KindReply || r.ID != g.relay || !fresh(r.Time, now) {
			return
		}
		g.fwds[g.sender(from)]++
		g.add(g.hostAt(origin.Unmap()), r)
	case d.Kind == KindRelayEnd && d.ID == g.relay && g.mode == gatherRelay:
		var e relayEnd
		if json.Unmarshal(d.Body, &e) == nil {
			g.ends[g.sender(from)] = &e
		}
	}
}

// add files one part of host's reply.
func (g *gather) add(host string, d *Datagram) {
	m := g.msgs[host]
	if m == nil {
		m = &message{parts: make([][]byte, d.Parts)}
		g.msgs[host] = m
		g.order = append(g.order, host)
	}
	if int(d.Parts) != len(m.parts) || m.parts[d.Part] != nil || g.bytes+len(d.Body) > maxGathered {
		return
	}
	m.parts[d.Part] = bytes.Clone(d.Body)
	m.got++
	g.bytes += len(d.Body)
}

// done reports whether there is nothing more to wait for.
func (g *gather) done() bool {
	switch g.mode {
	case gatherHosts:
		for _, h := range g.labels {
			if m := g.msgs[h]; m == nil || !m.complete() {
				return false
			}
		}
		return true
	case gatherRelay:
		for _, r := range g.relays {
			e, m := g.ends[r], g.msgs[r]
			if e == nil || g.fwds[r] < e.Forwarded || m == nil || !m.complete() {
				return false
			}
		}
		return true
	default:
		return false
	}
}

// results returns what each host answered: the named hosts in the order
// given, else the relays first and the other hosts by address.
func (g *gather) results(t Target) []Answer {
	hosts := slices.Clone(t.Hosts)
	if g.mode != gatherHosts {
		hosts = slices.Clone(g.order)
		slices.SortFunc(hosts, compareHosts)
		if g.mode == gatherRelay {
			hosts = slices.DeleteFunc(hosts, func(h string) bool { return slices.Contains(g.relays, h) })
			hosts = append(slices.Clone(g.relays), hosts...)
		}
	}
	out := make([]Answer, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, g.result(h))
	}
	return out
}

// result puts together host's reply.
func (g *gather) result(host string) Answer {
	m := g.msgs[host]
	switch {
	case m == nil:
		return Answer{Host: host, Err: "no answer"}
	case !m.complete():
		return Answer{Host: host, Err: fmt.Sprintf("incomplete reply: %d of %d parts arrived", m.got, len(m.parts))}
	}
	var r Reply
	if err := json.Unmarshal(bytes.Join(m.parts, nil), &r); err != nil {
		return Answer{Host: host, Err: fmt.Sprintf("bad reply: %v", err)}
	}
	return Answer{Host: host, Reply: &r}
}

// relayProblems says what is missing from the gathering of each relay
// that answered, one line each naming the relay. A relay that did not
// answer at all is a host without an answer instead.
func (g *gather) relayProblems() []string {
	var out []string
	for _, r := range g.relays {
		e := g.ends[r]
		switch {
		case g.msgs[r] == nil:
		case e == nil:
			out = append(out, r+": the relay did not report the end of its gathering: replies may be missing")
		case g.fwds[r] < e.Forwarded:
			out = append(out, fmt.Sprintf("%s: %d of the %d datagrams the relay forwarded from %d hosts were lost: replies may be missing",
				r, e.Forwarded-g.fwds[r], e.Forwarded, e.Hosts))
		}
	}
	return out
}

// compareHosts orders addresses numerically, and names after them.
func compareHosts(a, b string) int {
	aa, aerr := netip.ParseAddr(a)
	ba, berr := netip.ParseAddr(b)
	switch {
	case aerr == nil && berr == nil:
		return aa.Compare(ba)
	case aerr == nil:
		return -1
	case berr == nil:
		return 1
	}
	return cmp.Compare(a, b)
}
