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

// relayGrace is how long metac waits for a relay beyond the gather time
// it asked for: the relay's own work and the trip back.
const relayGrace = 2 * time.Second

// maxGathered bounds the reply bytes metac keeps from one request.
const maxGathered = 256 << 20

// Target says where a network request goes: to named hosts, or
// broadcast, or through a relay that broadcasts. Give Hosts or Broadcast,
// not both; Relay needs Broadcast without BroadcastTo.
type Target struct {
	Hosts       []string   // each as HOST or HOST:PORT
	Broadcast   bool       // to every metad on the local subnets
	BroadcastTo netip.Addr // with Broadcast: to this broadcast address only; zero: every interface's
	Relay       string     // with Broadcast: this host broadcasts on its own subnets
	Port        int        // of network control, for hosts that name none
	// Timeout bounds the wait for replies. A broadcast gathers replies
	// for all of it; a relay gathers for as long, and is given a little
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
	// Answers has the named hosts in the order given; else the relay
	// first, then the other hosts by address.
	Answers []Answer
	// Problem says what may be missing from a relay's gathering, or "".
	Problem string
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
	labels map[ID]string // host named by request id: -h hosts, the relay
	bcast  ID            // broadcast request: hosts named by address
	relay  ID            // relayed request: forwards name their origin
	mode   gatherMode
	msgs   map[string]*message
	order  []string // hosts, in the order their first datagram arrived
	end    *relayEnd
	fwds   int // forward datagrams accepted
	bytes  int
}

type gatherMode uint8

const (
	gatherHosts     gatherMode = iota // until every host answered
	gatherBroadcast                   // until the deadline
	gatherRelay                       // until the relay says it is done
)

func newGather(key []byte, mode gatherMode) *gather {
	return &gather{key: key, mode: mode, labels: make(map[ID]string), msgs: make(map[string]*message)}
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
	return &Outcome{Answers: g.results(t), Problem: g.relayProblem()}, nil
}

// check validates the combination of targets.
func (t Target) check() error {
	switch {
	case len(t.Hosts) > 0 && t.Broadcast:
		return errors.New("cannot send to hosts and broadcast at once")
	case len(t.Hosts) == 0 && !t.Broadcast:
		return errors.New("cannot send a request to no host")
	case t.Relay != "" && !t.Broadcast:
		return errors.New("cannot relay without a broadcast: the relay broadcasts the request")
	case t.Relay != "" && t.BroadcastTo.IsValid():
		return errors.New("cannot relay to a broadcast address: the relay broadcasts on its own subnets")
	case t.Timeout <= 0:
		return errors.New("cannot wait for replies: no timeout")
	}
	return nil
}

// callNet sends req to t and gathers the replies.
func callNet(key []byte, t Target, req Request) (*gather, error) {
	bcast := t.Broadcast && t.Relay == "" // broadcast from here
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
	case t.Relay != "":
		g = newGather(key, gatherRelay)
		g.relay = newID()
		g.labels[g.relay] = t.Relay
		req.GatherMS = t.Timeout.Milliseconds()
		to, err := resolve(t.Relay, t.Port)
		if err != nil {
			return nil, err
		}
		sends = append(sends, send{to, g.relay, FlagRelay})
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
	case d.Kind == KindForward && d.ID == g.relay && g.mode == gatherRelay:
		origin, inner := d.forwarded()
		r, err := Decode(g.key, inner)
		if err != nil || r.Kind != KindReply || r.ID != g.relay || !fresh(r.Time, now) {
			return
		}
		g.fwds++
		g.add(origin.String(), r)
	case d.Kind == KindRelayEnd && d.ID == g.relay && g.mode == gatherRelay:
		var e relayEnd
		if json.Unmarshal(d.Body, &e) == nil {
			g.end = &e
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
		m := g.msgs[g.labels[g.relay]]
		return g.end != nil && g.fwds >= g.end.Forwarded && m != nil && m.complete()
	default:
		return false
	}
}

// results returns what each host answered: the named hosts in the order
// given, else the relay first and the other hosts by address.
func (g *gather) results(t Target) []Answer {
	hosts := slices.Clone(t.Hosts)
	if g.mode != gatherHosts {
		hosts = slices.Clone(g.order)
		slices.SortFunc(hosts, compareHosts)
		if g.mode == gatherRelay {
			hosts = slices.DeleteFunc(hosts, func(h string) bool { return h == t.Relay })
			hosts = append([]string{t.Relay}, hosts...)
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

// relayProblem says what is missing from a relay's gathering, or "".
func (g *gather) relayProblem() string {
	switch {
	case g.mode != gatherRelay || g.msgs[g.labels[g.relay]] == nil:
		return ""
	case g.end == nil:
		return "the relay did not report the end of its gathering: replies may be missing"
	case g.fwds < g.end.Forwarded:
		return fmt.Sprintf("%d of the %d datagrams the relay forwarded from %d hosts were lost: replies may be missing",
			g.end.Forwarded-g.fwds, g.end.Forwarded, g.end.Hosts)
	}
	return ""
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
