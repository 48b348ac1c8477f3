package netctl

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
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
	// Expect, with Broadcast, are the addresses of the hosts expected to
	// answer: those still silent get the request again, each to itself,
	// and the broadcast ends as soon as each of them, and every other
	// host that began to answer, has answered in full.
	Expect []netip.Addr
	// Timeout bounds the wait for replies. A broadcast gathers replies
	// for all of it (unless Expect says who answers); relays gather for
	// as long, and are given a little more to send them. Within it,
	// hosts that answered in part are asked for the rest, and named
	// hosts that are silent get the request again.
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
	seen  partSet
	// route is where to ask for the missing parts: the host itself, or
	// the relay that forwarded its reply (then origin is the host's
	// address).
	route  netip.AddrPort
	origin netip.Addr
}

func (m *message) complete() bool { return m.seen.complete() }

// retry is a request sent again to a host that is silent.
type retry struct {
	host  string // as the gathering names its reply
	to    netip.AddrPort
	id    ID
	next  time.Time
	every time.Duration // doubles after each retry
}

// Retries of a request to a silent host: the first after retryFirst,
// then ever less often. reexec is never sent again: the image that takes
// over knows neither the request ids answered nor the replies kept, and
// would carry it out again.
const retryFirst = 250 * time.Millisecond

// broadcastHosts is how many hosts metac sizes its receive buffer for
// when a broadcast expects none in particular.
const broadcastHosts = 512

// The time over which the hosts that answer a broadcast spread their
// replies (Request.SpreadMS): a share of the time metac waits, and, when
// metac knows how many hosts answer, spreadPerHost for each, so that a
// few hosts answer at once and many do not overflow a buffer on the way.
const (
	spreadShare   = 4
	spreadPerHost = 2500 * time.Microsecond
)

// spreadFor returns the spread of the replies to a broadcast that waits
// timeout for hosts hosts (0: not known).
func spreadFor(timeout time.Duration, hosts int) time.Duration {
	spread := timeout / spreadShare
	if hosts > 0 {
		spread = min(spread, time.Duration(hosts)*spreadPerHost)
	}
	return min(spread, maxSpread)
}

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
	// via holds the hosts whose replies each relay forwarded; endFrom
	// where each relay's end came from, and allAsks how often it was
	// asked for every forward again, and when last.
	via     map[string]map[string]bool
	endFrom map[string]netip.AddrPort
	allAsks map[string]*partSet
	bytes   int
	// expect are the hosts (addresses) a broadcast expects; retries the
	// requests to send again to hosts still silent.
	expect  []string
	retries []*retry
	request []byte // the body of the request, for retries
}

type gatherMode uint8

const (
	gatherHosts     gatherMode = iota // until every host answered
	gatherBroadcast                   // until the deadline
	gatherRelay                       // until the relay says it is done
)

func newGather(key []byte, mode gatherMode) *gather {
	return &gather{key: key, mode: mode, labels: make(map[ID]string), msgs: make(map[string]*message),
		relayAt: make(map[netip.Addr]string), ends: make(map[string]*relayEnd), fwds: make(map[string]int),
		via: make(map[string]map[string]bool), endFrom: make(map[string]netip.AddrPort), allAsks: make(map[string]*partSet)}
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
	// A broadcast or relay may bring replies from hosts nobody named.
	expect := len(t.Hosts)
	if t.Broadcast {
		expect = max(len(t.Expect), broadcastHosts)
	}
	sock, err := listenGather(network, bcast, recvBufferFor(expect))
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
		req.SpreadMS = spreadFor(t.Timeout, 0).Milliseconds()
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
		req.SpreadMS = spreadFor(t.Timeout, len(t.Expect)).Milliseconds()
		first := time.Duration(req.SpreadMS)*time.Millisecond + retryFirst // not before the reply is due
		for _, a := range t.Expect {
			a = a.Unmap()
			g.expect = append(g.expect, a.String())
			if req.Command != "reexec" {
				g.retries = append(g.retries, &retry{host: a.String(), to: netip.AddrPortFrom(a, uint16(t.Port)), id: g.bcast,
					next: now.Add(first), every: retryFirst})
			}
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
			if req.Command != "reexec" {
				g.retries = append(g.retries, &retry{host: h, to: to, id: id, next: now.Add(retryFirst), every: retryFirst})
			}
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	g.request = body
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
// reply it waits for is whole. Meanwhile it asks again for what is
// missing (askAgain).
func (g *gather) receive(sock *net.UDPConn, deadline time.Time) {
	buf := make([]byte, MaxDatagram+1)
	next := time.Now().Add(askAfter)
	for !g.done() {
		now := time.Now()
		if !now.Before(deadline) {
			return
		}
		if !now.Before(next) {
			g.askAgain(sock, now)
			next = now.Add(askAfter / 2)
		}
		sock.SetReadDeadline(earlier(deadline, next))
		n, from, err := sock.ReadFromUDPAddrPort(buf)
		if err != nil {
			if os.IsTimeout(err) {
				continue
			}
			return
		}
		g.accept(buf[:n], from, time.Now())
	}
}

// accept takes a datagram from a host at now. Datagrams that fail
// authentication, are stale, or answer another request are dropped.
func (g *gather) accept(b []byte, from netip.AddrPort, now time.Time) {
	d, err := Decode(g.key, b)
	if err != nil || !fresh(d.Time, now) {
		return
	}
	addr := from.Addr().Unmap()
	from = netip.AddrPortFrom(addr, from.Port())
	switch {
	case d.Kind == KindReply && g.labels[d.ID] != "":
		g.add(g.labels[d.ID], d, from, netip.Addr{}, now)
	case d.Kind == KindReply && d.ID == g.bcast && g.mode == gatherBroadcast:
		g.add(addr.String(), d, from, netip.Addr{}, now)
	case d.Kind == KindReply && d.ID == g.relay && g.mode == gatherRelay:
		g.add(g.sender(addr), d, from, netip.Addr{}, now)
	case d.Kind == KindForward && d.ID == g.relay && g.mode == gatherRelay:
		origin, inner := d.forwarded()
		r, err := Decode(g.key, inner)
		if err != nil || r.Kind != KindReply || r.ID != g.relay || !fresh(r.Time, now) {
			return
		}
		relay, host := g.sender(addr), g.hostAt(origin.Unmap())
		g.fwds[relay]++
		if g.via[relay] == nil {
			g.via[relay] = make(map[string]bool)
		}
		g.via[relay][host] = true
		g.add(host, r, from, origin.Unmap(), now)
	case d.Kind == KindRelayEnd && d.ID == g.relay && g.mode == gatherRelay:
		var e relayEnd
		if json.Unmarshal(d.Body, &e) == nil && g.ends[g.sender(addr)] == nil {
			g.ends[g.sender(addr)] = &e
			g.endFrom[g.sender(addr)] = from
			// Asked for every forward again once the forwards it counts
			// had time to arrive: a partSet of one part, never complete.
			g.allAsks[g.sender(addr)] = &partSet{have: []bool{false}, last: now}
		}
	}
}

// add files one part of host's reply, which came through route (a relay,
// for origin).
func (g *gather) add(host string, d *Datagram, route netip.AddrPort, origin netip.Addr, now time.Time) {
	m := g.msgs[host]
	if m == nil {
		m = &message{parts: make([][]byte, d.Parts), route: route, origin: origin}
		g.msgs[host] = m
		g.order = append(g.order, host)
	}
	if int(d.Parts) != len(m.parts) || g.bytes+len(d.Body) > maxGathered || !m.seen.add(d.Part, d.Parts, now) {
		return
	}
	m.parts[d.Part] = bytes.Clone(d.Body)
	g.bytes += len(d.Body)
}

// askAgain sends, at now, a resend for each reply that is incomplete and
// due, and the request again to each host that is silent and due.
func (g *gather) askAgain(sock *net.UDPConn, now time.Time) {
	for _, h := range g.order {
		m := g.msgs[h]
		if !m.seen.due(now) {
			continue
		}
		d := newDatagram(KindResend, g.idOf(h), now)
		d.Body = m.seen.ask(m.origin, now)
		sendDatagram(sock, g.key, d, m.route) // a send lost is a reply lost: the next ask covers both
	}
	for r, a := range g.allAsks {
		if e := g.ends[r]; len(g.via[r]) >= e.Hosts || !a.due(now) {
			continue
		}
		d := newDatagram(KindResend, g.relay, now)
		d.Body = encodeResend(allOrigins, nil)
		a.asks++
		a.last = now
		sendDatagram(sock, g.key, d, g.endFrom[r])
	}
	for _, r := range g.retries {
		if g.msgs[r.host] != nil || now.Before(r.next) {
			continue
		}
		d := newDatagram(KindRequest, r.id, now)
		d.Body = g.request
		sendDatagram(sock, g.key, d, r.to)
		r.every *= 2
		r.next = now.Add(r.every)
	}
}

// idOf returns the id of the request host answers.
func (g *gather) idOf(host string) ID {
	for id, h := range g.labels {
		if h == host {
			return id
		}
	}
	if g.mode == gatherRelay {
		return g.relay
	}
	return g.bcast
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
			if e == nil || len(g.via[r]) < e.Hosts || m == nil || !m.complete() {
				return false
			}
		}
		return g.allComplete()
	default:
		if len(g.expect) == 0 {
			return false
		}
		for _, h := range g.expect {
			if g.msgs[h] == nil {
				return false
			}
		}
		return g.allComplete()
	}
}

// allComplete reports whether every reply that began to arrive is whole.
func (g *gather) allComplete() bool {
	for _, m := range g.msgs {
		if !m.complete() {
			return false
		}
	}
	return true
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
		return Answer{Host: host, Err: fmt.Sprintf("incomplete reply: %d of %d parts arrived", m.seen.got, len(m.parts))}
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
		case len(g.via[r]) < e.Hosts:
			out = append(out, fmt.Sprintf("%s: every datagram of %d of the %d hosts the relay forwarded from was lost: replies are missing",
				r, e.Hosts-len(g.via[r]), e.Hosts))
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
