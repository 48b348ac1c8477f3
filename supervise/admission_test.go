package supervise

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"metad/conffmt"
)

// try is one connection offered to admission: from addr, at an offset from
// the start of the test, with live instances of that address already.
type try struct {
	addr string
	at   time.Duration
	live int
	want rule
}

func prefixes(ps ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

func TestAdmissionDecide(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	perSecond := func(n int) conffmt.Rate { return conffmt.Rate{N: n, Per: time.Second} }
	tests := []struct {
		name  string
		conf  conffmt.Service
		tries []try
	}{
		{"no limits admit everything", conffmt.Service{}, []try{
			{"10.0.0.1", 0, 1000, admitted},
			{"::1", 0, 0, admitted},
		}},
		{"only_from IPv4", conffmt.Service{OnlyFrom: prefixes("127.0.0.3/32", "10.0.0.0/8")}, []try{
			{"127.0.0.3", 0, 0, admitted},
			{"127.0.0.2", 0, 0, onlyFrom},
			{"10.200.3.4", 0, 0, admitted},
			{"11.0.0.1", 0, 0, onlyFrom},
			{"::ffff:10.1.2.3", 0, 0, admitted}, // IPv4-mapped is IPv4
			{"::ffff:127.0.0.2", 0, 0, onlyFrom},
			{"::1", 0, 0, onlyFrom},
		}},
		{"only_from IPv6", conffmt.Service{OnlyFrom: prefixes("2001:db8::/32", "::1/128")}, []try{
			{"2001:db8::5", 0, 0, admitted},
			{"fe80::1%eth0", 0, 0, onlyFrom},
			{"::1", 0, 0, admitted},
			{"127.0.0.1", 0, 0, onlyFrom},
		}},
		{"an empty only_from is none", conffmt.Service{OnlyFrom: []netip.Prefix{}}, []try{
			{"127.0.0.1", 0, 0, admitted},
		}},
		{"per_source counts what the address has", conffmt.Service{PerSource: 4}, []try{
			{"127.0.0.2", 0, 3, admitted},
			{"127.0.0.2", 0, 4, perSource},
			{"127.0.0.2", 0, 9, perSource},
			{"127.0.0.3", 0, 0, admitted},
		}},
		{"only_from is checked before per_source", conffmt.Service{PerSource: 1, OnlyFrom: prefixes("10.0.0.0/8")}, []try{
			{"127.0.0.2", 0, 5, onlyFrom},
		}},
		{"rate: a burst of N, then one every Per/N", conffmt.Service{Rate: perSecond(3)}, []try{
			{"10.0.0.1", 0, 0, admitted},
			{"10.0.0.1", 0, 0, admitted},
			{"10.0.0.1", 0, 0, admitted},
			{"10.0.0.1", 0, 0, overRate},
			{"10.0.0.2", 0, 0, admitted}, // each address has its own bucket
			{"10.0.0.1", 300 * time.Millisecond, 0, overRate},
			{"10.0.0.1", 334 * time.Millisecond, 0, admitted},
			{"10.0.0.1", 334 * time.Millisecond, 0, overRate},
			{"10.0.0.1", 5 * time.Second, 0, admitted}, // full again: N more
			{"10.0.0.1", 5 * time.Second, 0, admitted},
			{"10.0.0.1", 5 * time.Second, 0, admitted},
			{"10.0.0.1", 5 * time.Second, 0, overRate},
		}},
		{"rate: a refusal takes no token", conffmt.Service{Rate: perSecond(1)}, []try{
			{"10.0.0.1", 0, 0, admitted},
			{"10.0.0.1", 500 * time.Millisecond, 0, overRate},
			{"10.0.0.1", time.Second, 0, admitted},
		}},
		{"rate: IPv4-mapped shares the IPv4 bucket", conffmt.Service{Rate: perSecond(1)}, []try{
			{"10.0.0.1", 0, 0, admitted},
			{"::ffff:10.0.0.1", 0, 0, overRate},
		}},
		{"per_source before rate: its refusals take no token", conffmt.Service{PerSource: 1, Rate: perSecond(1)}, []try{
			{"10.0.0.1", 0, 1, perSource},
			{"10.0.0.1", 0, 1, perSource},
			{"10.0.0.1", 0, 0, admitted},
			{"10.0.0.1", 0, 0, overRate},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a admission
			var want Refused
			for i, tr := range tt.tries {
				got := a.decide(&tt.conf, netip.MustParseAddr(tr.addr), t0.Add(tr.at), tr.live)
				if got != tr.want {
					t.Errorf("try %d (%s at %v, %d live): got %v, want %v", i, tr.addr, tr.at, tr.live, got, tr.want)
				}
				switch tr.want {
				case onlyFrom:
					want.OnlyFrom++
				case perSource:
					want.PerSource++
				case overRate:
					want.Rate++
				}
			}
			if a.refused != want {
				t.Errorf("refused: got %+v, want %+v", a.refused, want)
			}
		})
	}
}

// TestAdmissionRateHolds offers a connection every millisecond from one
// address for a minute: what is admitted never exceeds the burst plus
// the refill, and reaches it.
func TestAdmissionRateHolds(t *testing.T) {
	t0 := time.Now()
	for _, rate := range []conffmt.Rate{{N: 10, Per: time.Second}, {N: 3, Per: time.Second}, {N: 7, Per: 90 * time.Second}, {N: 1, Per: time.Millisecond}} {
		var a admission
		c := conffmt.Service{Rate: rate}
		addr := netip.MustParseAddr("192.0.2.1")
		got := 0
		for ms := range 60_000 {
			at := time.Duration(ms) * time.Millisecond
			if a.decide(&c, addr, t0.Add(at), 0) == admitted {
				got++
			}
			if most := rate.N + int(int64(at)*int64(rate.N)/int64(rate.Per)); got > most {
				t.Fatalf("%d/%v: %d admitted after %v, want at most %d", rate.N, rate.Per, got, at, most)
			}
		}
		if least := rate.N + int(59*time.Second*time.Duration(rate.N)/rate.Per); got < least {
			t.Errorf("%d/%v: %d admitted in a minute, want at least %d", rate.N, rate.Per, got, least)
		}
	}
}

// TestRateTableBounded: the table never holds more than rateSlots
// addresses, forgets the one seen least recently, and an address seen
// again is remembered.
func TestRateTableBounded(t *testing.T) {
	t0 := time.Now()
	rate := conffmt.Rate{N: 1, Per: time.Hour}
	var tab rateTable
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	keep := netip.MustParseAddr("192.0.2.1")
	if !tab.take(keep, t0, rate) {
		t.Fatal("first connection of an address refused")
	}
	for i := range 10 * rateSlots {
		if !tab.take(addr(i), t0, rate) {
			t.Fatalf("address #%d: first connection refused", i)
		}
		if i%100 == 0 && tab.take(keep, t0, rate) { // seen again: kept, and still empty
			t.Fatalf("after %d addresses: the address seen often got a second token", i)
		}
		if n := tab.remembered(); n > rateSlots {
			t.Fatalf("after %d addresses: %d remembered, want at most %d", i+1, n, rateSlots)
		}
	}
	if n := len(tab.index); n != rateSlots {
		t.Errorf("index: got %d entries, want %d", n, rateSlots)
	}
	last := 10*rateSlots - 1
	if tab.take(addr(last), t0, rate) {
		t.Error("the address seen last was forgotten")
	}
	if !tab.take(addr(0), t0, rate) {
		t.Error("the address seen first was remembered: want it forgotten, with a full bucket")
	}
	// The list still runs from head to tail through every bucket.
	n, prev := 0, int32(-1)
	for i := tab.head; i >= 0; i = tab.buckets[i].next {
		if tab.buckets[i].prev != prev {
			t.Fatalf("bucket %d: got prev %d, want %d", i, tab.buckets[i].prev, prev)
		}
		if tab.index[tab.buckets[i].addr] != i {
			t.Fatalf("bucket %d is not indexed by its address", i)
		}
		prev = i
		n++
	}
	if n != rateSlots || prev != tab.tail {
		t.Errorf("list: got %d buckets ending at %d, want %d ending at the tail %d", n, prev, rateSlots, tab.tail)
	}
}

// TestRefusalLogLimited: one line per rule and refusalLogEvery at most,
// each with the count since the line before; the refusals left are due
// by the deadline.
func TestRefusalLogLimited(t *testing.T) {
	t0 := time.Now()
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	var a admission
	a2 := netip.MustParseAddr("127.0.0.2")
	type line struct {
		at      int // ms
		rule    rule
		refused int
	}
	var got []line
	// 2.5 s of one refusal a millisecond by per_source, and one every
	// 10 ms by rate.
	for n := range 2500 {
		if l, ok := a.noteRefusal(perSource, a2, ms(n)); ok {
			got = append(got, line{n, l.rule, l.refused})
		}
		if n%10 == 9 {
			if l, ok := a.noteRefusal(overRate, a2, ms(n)); ok {
				got = append(got, line{n, l.rule, l.refused})
			}
		}
	}
	want := []line{
		{0, perSource, 1}, {9, overRate, 1},
		{1000, perSource, 1000}, {1009, overRate, 100},
		{2000, perSource, 1000}, {2009, overRate, 100},
	}
	if !slices.Equal(got, want) {
		t.Errorf("lines: got %v, want %v", got, want)
	}
	if d := a.logDeadline(); !d.Equal(ms(3000)) {
		t.Errorf("log deadline: got %v, want 3s", d.Sub(t0))
	}
	if _, ok := a.due(perSource, ms(2999)); ok {
		t.Error("per_source: a line due before its second has passed")
	}
	if l, ok := a.due(perSource, ms(3000)); !ok || l.refused != 499 || l.last != a2 {
		t.Errorf("per_source at its deadline: got %+v, %v, want the 499 left from %v", l, ok, a2)
	}
	if d := a.logDeadline(); !d.Equal(ms(3009)) {
		t.Errorf("log deadline: got %v, want rate's, 3.009s", d.Sub(t0))
	}
	if l, ok := a.due(overRate, ms(3009)); !ok || l.refused != 49 {
		t.Errorf("rate at its deadline: got %+v, %v, want the 49 left", l, ok)
	}
	if d := a.logDeadline(); !d.IsZero() {
		t.Errorf("log deadline with nothing unlogged: got %v, want none", d.Sub(t0))
	}
}

// TestAdmissionReload: a new rate forgets the buckets; other changes keep
// them.
func TestAdmissionReload(t *testing.T) {
	t0 := time.Now()
	addr := netip.MustParseAddr("10.0.0.1")
	old := conffmt.Service{Rate: conffmt.Rate{N: 1, Per: time.Hour}}
	var a admission
	a.decide(&old, addr, t0, 0)
	same := old
	same.PerSource = 3
	a.changed(&old, &same)
	if a.decide(&same, addr, t0, 0) != overRate {
		t.Error("a reload of per_source refilled the bucket")
	}
	faster := same
	faster.Rate.N = 2
	a.changed(&same, &faster)
	if got := a.decide(&faster, addr, t0, 0); got != admitted {
		t.Errorf("after a new rate: got %v, want admitted", got)
	}
}
