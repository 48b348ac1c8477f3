package netctl

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"metad/conffmt"
	"metad/supervise"
)

func TestResendBodyRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		origin netip.Addr
		parts  []uint16
	}{
		{netip.Addr{}, nil},
		{netip.Addr{}, []uint16{0, 7, 4095}},
		{netip.MustParseAddr("10.1.2.3"), []uint16{2}},
		{netip.MustParseAddr("fd00::1"), nil},
	} {
		origin, parts, err := decodeResend(encodeResend(tt.origin, tt.parts))
		if err != nil || origin != tt.origin || !slices.Equal(parts, tt.parts) {
			t.Errorf("got %v %v %v, want %v %v", origin, parts, err, tt.origin, tt.parts)
		}
	}
	for _, b := range [][]byte{nil, make([]byte, 15), make([]byte, 17), append(make([]byte, 16), 0x10, 0x00)} {
		if _, _, err := decodeResend(b); err == nil {
			t.Errorf("%x: got no error, want one", b)
		}
	}
}

func FuzzResendBody(f *testing.F) {
	f.Add(encodeResend(netip.Addr{}, nil))
	f.Add(encodeResend(netip.MustParseAddr("10.0.0.1"), []uint16{1, 2, 3}))
	f.Fuzz(func(t *testing.T, b []byte) {
		origin, parts, err := decodeResend(b)
		if err != nil {
			return
		}
		if again := encodeResend(origin, parts); !bytes.Equal(again, b) {
			t.Fatalf("round trip changed the body:\n got %x\nwant %x", again, b)
		}
		// A server survives it, whatever is kept.
		k := newKeptReplies()
		to := netip.MustParseAddrPort("10.0.0.9:4000")
		k.keepOwn(testID, to, [][]byte{[]byte("a"), []byte("b")}, testTime)
		k.keepForward(testID, origin, to, 0, 2, []byte("c"), testTime)
		for range maxResends + 1 {
			got, err := k.resend(keptKey{testID, origin}, to, parts, testTime)
			if err == nil && len(got) > 2 {
				t.Fatalf("got %d parts of a reply of 2", len(got))
			}
		}
	})
}

func TestKeptRepliesBounds(t *testing.T) {
	to := netip.MustParseAddrPort("10.0.0.9:4000")
	other := netip.MustParseAddrPort("10.0.0.9:4001")
	ids := []ID{{1}, {2}, {3}, {4}}
	part := func(n int) []byte { return bytes.Repeat([]byte("x"), n) }

	k := newKeptReplies()
	k.maxCount, k.maxSize = 2, 99
	k.keepOwn(ids[0], to, [][]byte{part(10)}, testTime)
	k.keepOwn(ids[1], to, [][]byte{part(10)}, testTime)
	k.keepOwn(ids[2], to, [][]byte{part(10)}, testTime)
	if n, size := k.len(); n != 2 || size != 20 {
		t.Errorf("over the count: got %d replies of %d bytes, want 2 of 20", n, size)
	}
	if _, err := k.resend(keptKey{id: ids[0]}, to, nil, testTime); err != errNotKept {
		t.Errorf("the oldest: got %v, want %v", err, errNotKept)
	}
	k.keepOwn(ids[3], to, [][]byte{part(60), part(30)}, testTime)
	if n, size := k.len(); n != 1 || size != 90 {
		t.Errorf("over the bytes: got %d replies of %d bytes, want 1 of 90", n, size)
	}
	key := keptKey{id: ids[3]}
	if _, err := k.resend(key, other, nil, testTime); err != errNotRequester {
		t.Errorf("from another port: got %v, want %v", err, errNotRequester)
	}
	got, err := k.resend(key, to, []uint16{1, 1, 7, 1}, testTime)
	if err != nil || len(got) != 1 || got[0].index != 1 || got[0].parts != 2 || len(got[0].b) != 30 {
		t.Errorf("part 1, asked for thrice, and one that is not: got %+v %v, want part 1 once", got, err)
	}
	for i := 1; i < maxResends; i++ {
		got, err = k.resend(key, to, nil, testTime)
		if err != nil || len(got) != 2 {
			t.Fatalf("resend %d: got %d parts, %v; want the whole reply", i+1, len(got), err)
		}
	}
	if _, err := k.resend(key, to, nil, testTime); err != errResendLimit {
		t.Errorf("resend %d: got %v, want %v", maxResends+1, err, errResendLimit)
	}
	if _, err := k.resend(key, to, nil, testTime.Add(keepFor)); err != errNotKept {
		t.Errorf("after %v: got %v, want %v", keepFor, err, errNotKept)
	}

	// A relay keeps the parts it forwarded, and only those.
	origin := netip.MustParseAddr("10.2.0.5")
	k = newKeptReplies()
	k.keepForward(ids[0], origin, to, 2, 3, part(5), testTime)
	k.keepForward(ids[0], origin, to, 0, 3, part(6), testTime)
	k.keepForward(ids[0], origin, to, 0, 4, part(7), testTime) // not of this message
	got, err = k.resend(keptKey{ids[0], origin}, to, nil, testTime)
	if err != nil || len(got) != 2 || got[0].index != 0 || len(got[0].b) != 6 || got[1].index != 2 {
		t.Errorf("forwards: got %+v %v, want parts 0 and 2", got, err)
	}
	// Every forward of a request at once, each counted as a resend of
	// its reply: not this metad's own reply, nor another request's.
	second := netip.MustParseAddr("10.2.0.6")
	k.keepForward(ids[0], second, to, 0, 1, part(4), testTime)
	k.keepForward(ids[1], second, to, 0, 1, part(4), testTime)
	k.keepOwn(ids[0], to, [][]byte{part(3)}, testTime)
	all := k.resendAll(ids[0], to, testTime)
	if len(all) != 2 || len(all[origin]) != 2 || len(all[second]) != 1 {
		t.Errorf("every forward: got %v, want the 2 parts of %v and the part of %v", all, origin, second)
	}
	if n := len(k.resendAll(ids[0], other, testTime)); n != 0 {
		t.Errorf("from elsewhere: got %d replies, want none", n)
	}
	for range maxResends - 1 {
		k.resendAll(ids[0], to, testTime)
	}
	if n := len(k.resendAll(ids[0], to, testTime)); n != 0 {
		t.Errorf("after %d resends: got %d replies, want none", maxResends, n)
	}
}

// lossyProxy stands between a client and a server: it relays every
// datagram, and drops those from the server for which drop, given their
// number from 0 and their bytes, says so.
type lossyProxy struct {
	addr  netip.AddrPort
	mu    sync.Mutex
	n     int
	drops int
}

func startLossyProxy(t *testing.T, server netip.AddrPort, drop func(n int, b []byte) bool) *lossyProxy {
	t.Helper()
	front, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 6)})
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 6)})
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{addr: front.LocalAddr().(*net.UDPAddr).AddrPort()}
	var client netip.AddrPort
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, MaxDatagram+1)
		for {
			n, from, err := front.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			client = from
			p.mu.Unlock()
			back.WriteToUDPAddrPort(buf[:n], server)
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, MaxDatagram+1)
		for {
			n, _, err := back.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			to, dropped := client, drop(p.n, buf[:n])
			p.n++
			if dropped {
				p.drops++
			}
			p.mu.Unlock()
			if !dropped {
				front.WriteToUDPAddrPort(buf[:n], to)
			}
		}
	}()
	t.Cleanup(func() {
		front.Close()
		back.Close()
		wg.Wait()
	})
	return p
}

// manyServices returns a control with a list of n services, which takes
// several datagrams.
func manyServices(n int) *fakeControl {
	ctl := newFakeControl()
	for i := range n {
		ctl.services = append(ctl.services, supervise.Status{
			Name: fmt.Sprintf("service-%04d", i), Class: conffmt.Daemon, Enabled: true, State: "running",
			Instances: []supervise.Instance{{PID: i + 1, Started: testTime}},
		})
	}
	return ctl
}

// TestCallAsksAgain loses replies between a server and Call: parts of a
// reply, and the whole reply to a request. Call asks again within its
// timeout and gets every reply whole; the server carries each request out
// once.
func TestCallAsksAgain(t *testing.T) {
	for _, tt := range []struct {
		name string
		cmd  string
		drop func(n int) bool
	}{
		{"every third part lost", "list", func(n int) bool { return n%3 == 1 }},
		{"the first parts lost", "list", func(n int) bool { return n < 4 }},
		{"the whole reply lost", "disable", func(n int) bool { return n == 0 }},
		{"the resent parts lost too", "list", func(n int) bool { return n%2 == 0 && n < 40 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, "127.0.0.2:0", testKey, manyServices(60), nil)
			p := startLossyProxy(t, s.addr, func(n int, _ []byte) bool { return tt.drop(n) })
			args := []string{}
			if tt.cmd == "disable" {
				args = []string{"service-0001"}
			}
			out, err := Call(testKey, Target{Hosts: []string{p.addr.String()}, Timeout: testWait}, NewRequest(tt.cmd, args...))
			if err != nil {
				t.Fatal(err)
			}
			if rs := out.Answers; len(rs) != 1 || rs[0].Reply == nil || !rs[0].Reply.OK {
				t.Fatalf("got %+v, want one whole reply", rs)
			}
			if tt.cmd == "list" && len(out.Answers[0].Reply.Services) != 60 {
				t.Errorf("got %d services, want 60", len(out.Answers[0].Reply.Services))
			}
			if calls := s.ctl.callLog(); len(calls) != 1 {
				t.Errorf("got calls %q, want one", calls)
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.drops == 0 {
				t.Errorf("the proxy dropped nothing: the test proves nothing")
			}
		})
	}
}

// TestNetResendOnlyToTheRequester checks the bounds of resends: a resend
// from elsewhere than the requester gets nothing, one without the key is
// refused, and a reply is resent at most maxResends times.
func TestNetResendOnlyToTheRequester(t *testing.T) {
	s := startServer(t, "127.0.0.2:0", testKey, manyServices(30), nil)
	c, other := newRawClient(t, s.addr), newRawClient(t, s.addr)
	id := newID()
	c.send(id, time.Now(), "list")
	first := c.next()
	size := 0
	for range first.Parts {
		size += len(first.Body) // every part but the last is as big as the first
	}
	for d := first; d.Part+1 < first.Parts; {
		d = c.next()
	}
	resend := func(from *rawClient, key []byte, parts ...uint16) {
		d := newDatagram(KindResend, id, time.Now())
		d.Body = encodeResend(netip.Addr{}, parts)
		b, err := Encode(key, d)
		if err != nil {
			t.Fatal(err)
		}
		from.resend(b)
	}
	resend(other, testKey)
	s.log.wait(t, 1, "resend not honoured", errNotRequester.Error())
	resend(c, otherKey)
	s.log.wait(t, 1, "refused network control request", "bad MAC")
	for i := range maxResends {
		resend(c, testKey, 1, 0)
		got := 0
		for _, want := range []uint16{1, 0} {
			d := c.next()
			if d.ID != id || d.Part != want || d.Parts != first.Parts {
				t.Fatalf("resend %d: got part %d/%d of %x, want %d/%d of %x", i, d.Part, d.Parts, d.ID, want, first.Parts, id)
			}
			got += len(d.Body)
		}
		if got > size {
			t.Errorf("resend %d: got %d bytes, more than the %d of the reply", i, got, size)
		}
	}
	resend(c, testKey)
	s.log.wait(t, 1, "resend not honoured", errResendLimit.Error())
	if calls := s.ctl.callLog(); len(calls) != 1 {
		t.Errorf("got calls %q, want list once", calls)
	}
}

// TestCallAsksARelayForEveryForward loses every datagram of one host's
// reply between a relay and Call: Call cannot name the host, but the
// relay's end counts it, and Call asks the relay for every reply it
// forwarded again.
func TestCallAsksARelayForEveryForward(t *testing.T) {
	b1, b2, port := startHosts(t)
	r := startServer(t, fmt.Sprintf("127.0.0.2:%d", port), testKey, newFakeControl("web"), broadcastsTo(t, "127.0.0.3", "127.0.0.4"))
	forwards := 0
	p := startLossyProxy(t, r.addr, func(_ int, b []byte) bool {
		d, err := Decode(testKey, b)
		if err != nil || d.Kind != KindForward {
			return false
		}
		forwards++
		return forwards == 1
	})
	relay := p.addr.String()
	out, err := Call(testKey, Target{Broadcast: true, Relays: []string{relay}, Timeout: time.Second}, NewRequest("disable", "web"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(okHosts(t, out), " "), relay+" 127.0.0.3 127.0.0.4"; got != want {
		t.Errorf("got hosts %q, want %q", got, want)
	}
	if len(out.Problems) != 0 {
		t.Errorf("got problems %q, want none", out.Problems)
	}
	for _, s := range []*testServer{r, b1, b2} {
		if calls := s.ctl.callLog(); len(calls) != 1 {
			t.Errorf("%s: got calls %q, want disable web once", s.addr, calls)
		}
	}
	r.log.wait(t, 1, "resent every forwarded reply")
}
