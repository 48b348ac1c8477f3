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
	from := netip.MustParseAddr("10.0.0.9")
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
	relayAddr := netip.MustParseAddr("10.1.0.1")
	fwd := func(r Reply) []byte {
		b, err := encodeForward(testKey, id, testTime, origin, replyParts(t, id, r)[0])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	end := func(e relayEnd) []byte {
		d := &Datagram{Kind: KindRelayEnd, ID: id, Nonce: testNonce, Time: testTime, Parts: 1}
		d.Body, _ = json.Marshal(e)
		b, _ := Encode(testKey, d)
		return b
	}
	tests := []struct {
		name    string
		in      [][]byte
		done    bool
		hosts   string
		problem string
	}{
		{"whole", [][]byte{replyParts(t, id, Reply{OK: true})[0], fwd(Reply{OK: true}), end(relayEnd{Hosts: 1, Forwarded: 1})},
			true, "relay 10.2.0.5", ""},
		{"no end", [][]byte{replyParts(t, id, Reply{OK: true})[0], fwd(Reply{OK: true})},
			false, "relay 10.2.0.5", "did not report the end"},
		{"a forward lost", [][]byte{replyParts(t, id, Reply{OK: true})[0], end(relayEnd{Hosts: 2, Forwarded: 2}), fwd(Reply{OK: true})},
			false, "relay 10.2.0.5", "1 of the 2 datagrams"},
		{"the relay silent", nil, false, "relay", ""},
	}
	for _, tt := range tests {
		g := newGather(testKey, gatherRelay)
		g.relay, g.labels[id] = id, "relay"
		for _, b := range tt.in {
			g.accept(b, relayAddr, testTime)
		}
		var hosts []string
		for _, r := range g.results(Target{Relay: "relay"}) {
			hosts = append(hosts, r.Host)
		}
		if g.done() != tt.done || strings.Join(hosts, " ") != tt.hosts {
			t.Errorf("%s: got done %v, hosts %q; want %v, %q", tt.name, g.done(), hosts, tt.done, tt.hosts)
		}
		if p := g.relayProblem(); (tt.problem == "") != (p == "") || !strings.Contains(p, tt.problem) {
			t.Errorf("%s: got problem %q, want %q", tt.name, p, tt.problem)
		}
	}
}
