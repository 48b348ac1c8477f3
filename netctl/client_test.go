package netctl

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// replyParts encodes r as the reply datagrams to id.
func replyParts(t *testing.T, id ID, r Reply) [][]byte {
	t.Helper()
	body, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := encodeParts(testKey, KindReply, id, testTime, body)
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

func TestGatherHosts(t *testing.T) {
	big := Reply{Version: 1, OK: true, Services: make([]Service, 40)}
	for i := range big.Services {
		big.Services[i] = Service{Name: strings.Repeat("s", 60), Instances: []Instance{}}
	}
	whole, partial, silent := newID(), newID(), newID()
	g := newGather(testKey, gatherHosts)
	g.labels[whole], g.labels[partial], g.labels[silent] = "whole", "partial", "silent"
	from := netip.MustParseAddrPort("10.0.0.9:611")
	for _, b := range replyParts(t, whole, big) {
		g.accept(b, from, testTime)
		g.accept(b, from, testTime) // duplicates are ignored
	}
	parts := replyParts(t, partial, big)
	if len(parts) < 3 {
		t.Fatalf("got %d parts, want at least 3 for this test", len(parts))
	}
	for _, b := range parts[1:] {
		g.accept(b, from, testTime)
	}
	// Not for us: another request, the wrong key, too old.
	g.accept(replyParts(t, newID(), big)[0], from, testTime)
	wrong, _ := Encode(otherKey, &Datagram{Kind: KindReply, ID: silent, Nonce: testNonce, Time: testTime, Parts: 1})
	g.accept(wrong, from, testTime)
	g.accept(replyParts(t, silent, big)[0], from, testTime.Add(Skew+1))
	if g.done() {
		t.Errorf("got done with two hosts missing parts, want not done")
	}

	rs := g.results(Target{Hosts: []string{"silent", "partial", "whole"}})
	want := []Answer{
		{Host: "silent", Err: "no answer"},
		{Host: "partial", Err: "incomplete reply: " + strconv.Itoa(len(parts)-1) + " of " + strconv.Itoa(len(parts)) + " parts arrived"},
		{Host: "whole"},
	}
	for i, w := range want {
		if rs[i].Host != w.Host || rs[i].Err != w.Err {
			t.Errorf("result %d: got %q %q, want %q %q", i, rs[i].Host, rs[i].Err, w.Host, w.Err)
		}
	}
	if r := rs[2].Reply; r == nil || len(r.Services) != 40 {
		t.Errorf("got %+v, want the whole reply of 40 services", rs[2].Reply)
	}

	g.accept(parts[0], from, testTime)
	g.accept(replyParts(t, silent, Reply{OK: true})[0], from, testTime)
	if !g.done() {
		t.Errorf("got not done with every reply whole, want done")
	}
}

func TestGatherRelay(t *testing.T) {
	id := newID()
	origin := netip.MustParseAddr("10.2.0.5")
	r1, r2 := netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.3.0.1")
	other := netip.MustParseAddr("10.1.0.9") // another address of a relay
	// in is a datagram that came from an address.
	type in struct {
		from netip.Addr
		b    []byte
	}
	reply := func(from netip.Addr) in { return in{from, replyParts(t, id, Reply{OK: true})[0]} }
	fwd := func(relay, origin netip.Addr) in {
		b, err := encodeForward(testKey, id, testTime, origin, replyParts(t, id, Reply{OK: true})[0])
		if err != nil {
			t.Fatal(err)
		}
		return in{relay, b}
	}
	end := func(relay netip.Addr, hosts, forwarded int) in {
		d := &Datagram{Kind: KindRelayEnd, ID: id, Nonce: testNonce, Time: testTime, Parts: 1}
		d.Body, _ = json.Marshal(relayEnd{Hosts: hosts, Forwarded: forwarded})
		b, _ := Encode(testKey, d)
		return in{relay, b}
	}
	tests := []struct {
		name     string
		relays   []string // named "r1" and "r2": at r1 and r2
		in       []in
		done     bool
		hosts    string
		problems string
	}{
		{"whole", []string{"r1"}, []in{reply(r1), fwd(r1, origin), end(r1, 1, 1)},
			true, "r1 10.2.0.5", ""},
		{"one relay is known at any address", []string{"r1"}, []in{reply(other), fwd(other, origin), end(other, 1, 1)},
			true, "r1 10.2.0.5", ""},
		{"no end", []string{"r1"}, []in{reply(r1), fwd(r1, origin)},
			false, "r1 10.2.0.5", "r1: the relay did not report the end"},
		{"a forward lost", []string{"r1"}, []in{reply(r1), end(r1, 2, 2), fwd(r1, origin)},
			false, "r1 10.2.0.5", "r1: every datagram of 1 of the 2 hosts"},
		{"a host's forwards lost, another's as many as were counted", []string{"r1"}, []in{reply(r1), end(r1, 2, 2), fwd(r1, origin), fwd(r1, origin)},
			false, "r1 10.2.0.5", "r1: every datagram of 1 of the 2 hosts"},
		{"the relay silent", []string{"r1"}, nil, false, "r1", ""},
		{"two relays", []string{"r2", "r1"}, []in{reply(r1), reply(r2), fwd(r2, origin), end(r1, 0, 0), end(r2, 1, 1)},
			true, "r2 r1 10.2.0.5", ""},
		{"a host two relays reach is listed once", []string{"r1", "r2"},
			[]in{reply(r1), reply(r2), fwd(r1, origin), fwd(r2, origin), end(r1, 1, 1), end(r2, 1, 1)},
			true, "r1 r2 10.2.0.5", ""},
		{"a relay's reply forwarded by the other", []string{"r1", "r2"}, []in{reply(r1), fwd(r1, r2), end(r1, 1, 1), end(r2, 0, 0)},
			true, "r1 r2", ""},
		{"one relay silent", []string{"r1", "r2"}, []in{reply(r1), fwd(r1, origin), end(r1, 1, 1)},
			false, "r1 r2 10.2.0.5", ""},
		{"one relay without an end", []string{"r1", "r2"}, []in{reply(r1), reply(r2), end(r1, 0, 0)},
			false, "r1 r2", "r2: the relay did not report the end"},
		{"many relays are known by address", []string{"r1", "r2"}, []in{reply(r1), reply(r2), reply(other), end(r1, 0, 0), end(r2, 0, 0)},
			true, "r1 r2 10.1.0.9", ""},
	}
	at := map[string]netip.Addr{"r1": r1, "r2": r2}
	for _, tt := range tests {
		g := newGather(testKey, gatherRelay)
		g.relay = id
		for _, r := range tt.relays {
			g.addRelay(r, at[r])
		}
		for _, d := range tt.in {
			g.accept(d.b, netip.AddrPortFrom(d.from, 611), testTime)
		}
		var hosts []string
		for _, r := range g.results(Target{Relays: tt.relays}) {
			hosts = append(hosts, r.Host)
		}
		if g.done() != tt.done || strings.Join(hosts, " ") != tt.hosts {
			t.Errorf("%s: got done %v, hosts %q; want %v, %q", tt.name, g.done(), hosts, tt.done, tt.hosts)
		}
		if p := strings.Join(g.relayProblems(), "\n"); (tt.problems == "") != (p == "") || !strings.Contains(p, tt.problems) {
			t.Errorf("%s: got problems %q, want %q", tt.name, p, tt.problems)
		}
	}
}
