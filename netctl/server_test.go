package netctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"metad/conffmt"
	"metad/supervise"
)

// logLines collects a server's log lines and lets a test wait for one.
type logLines struct {
	mu    sync.Mutex // guards lines
	lines []string
	added chan struct{} // ready when lines were added since the last wait
}

func newLogLines() *logLines { return &logLines{added: make(chan struct{}, 1)} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, string(p))
	l.mu.Unlock()
	select {
	case l.added <- struct{}{}:
	default:
	}
	return len(p), nil
}

// wait waits for the n-th log line (from 1) that contains every one of
// words, and fails the test after testWait.
func (l *logLines) wait(t *testing.T, n int, words ...string) {
	t.Helper()
	limit := time.After(testWait)
	for l.count(words...) < n {
		select {
		case <-l.added:
		case <-limit:
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("timed out waiting for log line %d with %q; log:\n%s", n, words, strings.Join(l.lines, ""))
		}
	}
}

// count returns how many log lines contain every one of words.
func (l *logLines) count(words ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			n++
		}
	}
	return n
}

// testServer is a network control server on a loopback address.
type testServer struct {
	addr netip.AddrPort
	ctl  *fakeControl
	log  *logLines
	srv  *Server
}

// startServer serves network control on addr ("127.0.0.2:0" for any
// port) with key until the test ends.
func startServer(t *testing.T, addr string, key []byte, ctl *fakeControl, broadcasts func() ([]netip.Addr, error)) *testServer {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), ctl: ctl, log: newLogLines()}
	srv := &Server{
		Handler:    newTestHandler(ctl, false),
		Key:        key,
		Port:       int(ts.addr.Port()),
		Log:        zerolog.New(ts.log).Level(zerolog.DebugLevel),
		Broadcasts: broadcasts,
	}
	ts.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		srv.Serve(ctx, conn)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ts
}

func TestNetHosts(t *testing.T) {
	a := startServer(t, "127.0.0.2:0", testKey, newFakeControl("web"), nil)
	b := startServer(t, "127.0.0.3:0", testKey, newFakeControl("db"), nil)
	tgt := Target{Hosts: []string{b.addr.String(), a.addr.String()}, Timeout: testWait}
	out, err := Call(testKey, tgt, NewRequest("disable", "web"))
	if err != nil {
		t.Fatal(err)
	}
	rs := out.Answers
	if len(rs) != 2 || rs[0].Host != b.addr.String() || rs[1].Host != a.addr.String() {
		t.Fatalf("got %+v, want the two hosts in the order given", rs)
	}
	if r := rs[0].Reply; r == nil || r.OK || r.Error != `unknown service "web"` {
		t.Errorf("host b: got %+v, want the error naming the service", r)
	}
	if r := rs[1].Reply; r == nil || !r.OK {
		t.Errorf("host a: got %+v, want ok", r)
	}
	if got := a.ctl.callLog(); len(got) != 1 || got[0] != "disable web" {
		t.Errorf("host a: got calls %q, want disable web", got)
	}
}

func TestNetLargeReply(t *testing.T) {
	ctl := newFakeControl()
	for i := range 1000 {
		ctl.services = append(ctl.services, supervise.Status{
			Name: fmt.Sprintf("service-%04d", i), Class: conffmt.Stream, Enabled: true, State: "running", Port: 10000 + i,
			Instances: []supervise.Instance{{PID: 2*i + 1, Started: testTime}, {PID: 2*i + 2, Started: testTime}},
		})
	}
	s := startServer(t, "127.0.0.2:0", testKey, ctl, nil)
	tgt := Target{Hosts: []string{s.addr.String()}, Timeout: testWait}
	g, err := callNet(testKey, tgt, NewRequest("list"))
	if err != nil {
		t.Fatal(err)
	}
	rs := g.results(tgt)
	if len(rs) != 1 || rs[0].Reply == nil {
		t.Fatalf("got %+v, want one whole reply", rs)
	}
	svcs := rs[0].Reply.Services
	if len(svcs) != 1000 || svcs[999].Name != "service-0999" || svcs[999].Instances[1].PID != 2000 {
		t.Errorf("got %d services, want all 1000 intact", len(svcs))
	}
	if parts := len(g.msgs[s.addr.String()].parts); parts < 100 {
		t.Errorf("got the reply in %d parts, want it to need over 100", parts)
	}
}

func TestNetWrongKeyGetsSilence(t *testing.T) {
	s := startServer(t, "127.0.0.2:0", testKey, newFakeControl("web"), nil)
	tgt := Target{Hosts: []string{s.addr.String()}, Timeout: 300 * time.Millisecond}
	out, err := Call(otherKey, tgt, NewRequest("stop", "web"))
	if err != nil {
		t.Fatal(err)
	}
	s.log.wait(t, 1, "refused network control request", "bad MAC")
	if rs := out.Answers; len(rs) != 1 || rs[0].Reply != nil || rs[0].Err != "no answer" {
		t.Errorf("got %+v, want no answer", rs)
	}
	if got := s.ctl.callLog(); len(got) != 0 {
		t.Errorf("got calls %q, want none", got)
	}
}

// rawClient sends hand-made datagrams to a server and reads its replies.
type rawClient struct {
	t    *testing.T
	conn *net.UDPConn
	to   netip.AddrPort
}

func newRawClient(t *testing.T, to netip.AddrPort) *rawClient {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, to: to}
}

// send sends a request for cmd under id, made at when, and returns the
// datagram sent.
func (c *rawClient) send(id ID, when time.Time, cmd string) []byte {
	c.t.Helper()
	d := newDatagram(KindRequest, id, when)
	d.Body, _ = json.Marshal(NewRequest(cmd))
	b, err := Encode(testKey, d)
	if err != nil {
		c.t.Fatal(err)
	}
	c.resend(b)
	return b
}

func (c *rawClient) resend(b []byte) {
	if _, err := c.conn.WriteToUDPAddrPort(b, c.to); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next reply datagram.
func (c *rawClient) next() *Datagram {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(testWait))
	buf := make([]byte, MaxDatagram)
	n, err := c.conn.Read(buf)
	if err != nil {
		c.t.Fatalf("got no reply: %v", err)
	}
	d, err := Decode(testKey, buf[:n])
	if err != nil {
		c.t.Fatalf("got a bad reply: %v", err)
	}
	return d
}

func TestNetRefusesReplaysAndStaleRequests(t *testing.T) {
	s := startServer(t, "127.0.0.2:0", testKey, newFakeControl("web"), nil)
	c := newRawClient(t, s.addr)

	first, stale, again, last := newID(), newID(), newID(), newID()
	captured := c.send(first, time.Now(), "version")
	if d := c.next(); d.ID != first {
		t.Fatalf("got a reply to %x, want one to %x", d.ID, first)
	}

	// The same datagram again: refused for its nonce.
	c.resend(captured)
	s.log.wait(t, 1, "refused network control request", "a replay")
	// Another copy of a request already answered, with a new nonce: not
	// carried out again, but its kept reply is sent again to its
	// requester, who lost it or asked before it arrived.
	c.send(first, time.Now(), "version")
	s.log.wait(t, 1, "request already answered")
	if d := c.next(); d.ID != first {
		t.Fatalf("got a reply to %x, want the kept one to %x again", d.ID, first)
	}
	// Requests made too long ago or too far ahead.
	c.send(stale, time.Now().Add(-Skew-5*time.Second), "version")
	c.send(again, time.Now().Add(Skew+5*time.Second), "version")
	s.log.wait(t, 2, "refused network control request", "off")

	// The next reply is to the next good request: none came in between.
	c.send(last, time.Now(), "version")
	if d := c.next(); d.ID != last {
		t.Errorf("got a reply to %x, want the next one to be to the last request %x", d.ID, last)
	}
	if n := s.log.count("control request", `"cmd":"version"`); n != 2 {
		t.Errorf("got %d requests carried out, want 2", n)
	}
}

// broadcastsTo returns the Broadcasts of a Server that reaches hosts;
// with none, of a Server that must never relay.
func broadcastsTo(t *testing.T, hosts ...string) func() ([]netip.Addr, error) {
	return func() ([]netip.Addr, error) {
		if len(hosts) == 0 {
			t.Error("a relayed request was relayed again")
		}
		var out []netip.Addr
		for _, h := range hosts {
			out = append(out, netip.MustParseAddr(h))
		}
		return out, nil
	}
}

// startHosts starts two servers that never relay, b1 at 127.0.0.3 and b2
// at 127.0.0.4, on one port, and returns them and the port.
func startHosts(t *testing.T) (b1, b2 *testServer, port uint16) {
	b1 = startServer(t, "127.0.0.3:0", testKey, newFakeControl("web"), broadcastsTo(t))
	port = b1.addr.Port()
	b2 = startServer(t, fmt.Sprintf("127.0.0.4:%d", port), testKey, newFakeControl("web"), broadcastsTo(t))
	return b1, b2, port
}

func TestNetRelay(t *testing.T) {
	b1, b2, port := startHosts(t)
	relayAddr := fmt.Sprintf("127.0.0.2:%d", port)
	// The relay is on its own "subnet" too: it must not answer twice.
	r := startServer(t, relayAddr, testKey, newFakeControl("web"), broadcastsTo(t, "127.0.0.3", "127.0.0.4", "127.0.0.2"))

	tgt := Target{Broadcast: true, Relays: []string{relayAddr}, Timeout: 500 * time.Millisecond}
	out, err := Call(testKey, tgt, NewRequest("disable", "web"))
	if err != nil {
		t.Fatal(err)
	}
	got := okHosts(t, out)
	if want := relayAddr + " 127.0.0.3 127.0.0.4"; strings.Join(got, " ") != want {
		t.Errorf("got hosts %q, want %q", got, want)
	}
	if p := out.Problems; len(p) != 0 {
		t.Errorf("got relay problem %q, want none", p)
	}
	for _, s := range []*testServer{r, b1, b2} {
		if calls := s.ctl.callLog(); len(calls) != 1 {
			t.Errorf("%s: got calls %q, want disable web once", s.addr, calls)
		}
	}
	r.log.wait(t, 1, "relayed request", `"hosts":2`)
}

func TestNetRefusesDebug(t *testing.T) {
	s := startServer(t, "127.0.0.2:0", testKey, newFakeControl("web"), nil)
	out, err := Call(testKey, Target{Hosts: []string{s.addr.String()}, Timeout: testWait}, NewRequest("debug", "stacks"))
	if err != nil {
		t.Fatal(err)
	}
	if r := out.Answers[0].Reply; r == nil || r.OK || r.Stacks != "" || !strings.Contains(r.Error, "local socket only") {
		t.Errorf("got %+v, want debug stacks refused over the network", r)
	}
	s.log.wait(t, 1, `"level":"warn"`, "control request failed", "local socket only", `"from":`)
}

func TestCallChecksTarget(t *testing.T) {
	tests := []struct {
		name string
		t    Target
		want string
	}{
		{"nowhere", Target{Timeout: time.Second}, "no host"},
		{"hosts and broadcast", Target{Hosts: []string{"a"}, Broadcast: true, Timeout: time.Second}, "hosts and broadcast"},
		{"relay without broadcast", Target{Hosts: []string{"a"}, Relays: []string{"r"}, Timeout: time.Second}, "without a broadcast"},
		{"relay to an address", Target{Broadcast: true, BroadcastTo: netip.MustParseAddr("10.0.0.255"), Relays: []string{"r"}, Timeout: time.Second}, "broadcast address"},
		{"no timeout", Target{Hosts: []string{"a"}}, "no timeout"},
	}
	for _, tt := range tests {
		if _, err := Call(testKey, tt.t, NewRequest("list")); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

// okHosts returns the hosts of out in order, and fails the test for each
// that did not answer ok.
func okHosts(t *testing.T, out *Outcome) []string {
	t.Helper()
	var hosts []string
	for _, res := range out.Answers {
		if res.Reply == nil || !res.Reply.OK {
			t.Errorf("%s: got %+v, want an ok reply", res.Host, res)
		}
		hosts = append(hosts, res.Host)
	}
	return hosts
}

func TestNetRelays(t *testing.T) {
	b1, b2, port := startHosts(t)
	// Both relays reach b1, and each other; only r2 reaches b2.
	r1Addr, r2Addr := fmt.Sprintf("127.0.0.2:%d", port), fmt.Sprintf("127.0.0.5:%d", port)
	r1 := startServer(t, r1Addr, testKey, newFakeControl("web"), broadcastsTo(t, "127.0.0.3", "127.0.0.5"))
	r2 := startServer(t, r2Addr, testKey, newFakeControl("web"), broadcastsTo(t, "127.0.0.3", "127.0.0.4", "127.0.0.2"))

	tgt := Target{Broadcast: true, Relays: []string{r2Addr, r1Addr}, Timeout: 500 * time.Millisecond}
	out, err := Call(testKey, tgt, NewRequest("disable", "web"))
	if err != nil {
		t.Fatal(err)
	}
	got := okHosts(t, out)
	if want := r2Addr + " " + r1Addr + " 127.0.0.3 127.0.0.4"; strings.Join(got, " ") != want {
		t.Errorf("got hosts %q, want %q: each once, the relays first", got, want)
	}
	if len(out.Problems) != 0 {
		t.Errorf("got problems %q, want none", out.Problems)
	}
	for _, s := range []*testServer{r1, r2, b1, b2} {
		if calls := s.ctl.callLog(); len(calls) != 1 {
			t.Errorf("%s: got calls %q, want disable web once", s.addr, calls)
		}
	}
}

func TestNetRelaysAfterARelayedCopy(t *testing.T) {
	b, _, port := startHosts(t)
	var mu sync.Mutex
	relays := 0
	r := startServer(t, fmt.Sprintf("127.0.0.2:%d", port), testKey, newFakeControl("web"), func() ([]netip.Addr, error) {
		mu.Lock()
		relays++
		mu.Unlock()
		return []netip.Addr{netip.MustParseAddr("127.0.0.3")}, nil
	})
	c := newRawClient(t, r.addr)
	id := newID()
	send := func(flags Flags) {
		d := newDatagram(KindRequest, id, time.Now())
		d.Flags, d.Body = flags, []byte(`{"v":1,"cmd":"disable","args":["web"],"gather_ms":100}`)
		b, err := Encode(testKey, d)
		if err != nil {
			t.Fatal(err)
		}
		c.resend(b)
	}
	// Another relay's copy reaches r first: r answers it.
	send(FlagRelayed)
	if d := c.next(); d.Kind != KindReply || d.ID != id {
		t.Fatalf("got a %s to %x, want the reply to %x", d.Kind, d.ID, id)
	}
	// Then the request to relay: r does not carry it out again (it
	// sends its kept reply again), but relays it, and b answers through r.
	send(FlagRelay)
	kinds := []Kind{c.next().Kind, c.next().Kind, c.next().Kind}
	if !slices.Equal(kinds, []Kind{KindReply, KindForward, KindRelayEnd}) {
		t.Errorf("got %v, want r's reply again, a forward of b's reply and the end of the relay", kinds)
	}
	if calls := r.ctl.callLog(); len(calls) != 1 {
		t.Errorf("relay: got calls %q, want disable web once", calls)
	}
	if calls := b.ctl.callLog(); len(calls) != 1 {
		t.Errorf("b: got calls %q, want disable web once", calls)
	}
	// A copy of the request to relay, sent again: relayed once only.
	// Once r has answered the next request, it has read the copy; once
	// quiesced, every relay it started is over.
	send(FlagRelay)
	version := newID()
	c.send(version, time.Now(), "version")
	for d := c.next(); d.ID != version; d = c.next() {
		if d.Kind != KindReply && d.Kind != KindRelayEnd || d.ID != id {
			t.Fatalf("got a %s to %x, want r's reply to %x again (after the copies of the relay's end), then the reply to version", d.Kind, d.ID, id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	resume, err := r.srv.Quiesce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resume()
	mu.Lock()
	defer mu.Unlock()
	if relays != 1 {
		t.Errorf("got %d relays, want 1", relays)
	}
}
