package supervise

import (
	"net/netip"
	"slices"
	"strconv"
	"time"

	"metad/conffmt"
)

// Stream admission (SPEC §11) decides, for each accepted connection,
// whether its client address may be served: only_from, per_source and
// rate=. It is pure policy owned by the stream service goroutine, like
// the slots it counts: the caller passes the time and what the address
// already takes of the service, and closes a refused connection itself.
//
// A connection refused for per_source is closed, as xinetd does, rather
// than left in the kernel's backlog until one of its address's instances
// ends: the backlog is one queue for every client, so connections left
// waiting there by one address would hold up the others behind them, and
// the service would have to stop accepting for everyone to leave them
// there. Closing costs the refused client a retry and no one else
// anything.

// rule is the admission rule that refused a connection, or admitted.
type rule uint8

const (
	admitted  rule = iota
	onlyFrom       // the address is in none of the only_from prefixes
	perSource      // the address already has per_source instances
	overRate       // the address's token bucket is empty
	ruleCount      // the number of rules, not a rule
)

func (r rule) String() string {
	switch r {
	case admitted:
		return "admitted"
	case onlyFrom:
		return "only_from"
	case perSource:
		return "per_source"
	case overRate:
		return "rate"
	default:
		return "rule(" + strconv.Itoa(int(r)) + ")"
	}
}

// refusalLogEvery is the least time between two log lines of refusals by
// one rule: a flood of refused connections makes one line a second per
// rule, with the count since the line before.
const refusalLogEvery = time.Second

// admission is a stream service's admission state: the token buckets of
// rate=, the refusal counters and their log. It is owned by the service
// goroutine and not safe for concurrent use. The zero value is ready:
// no address has used a token, nothing has been refused.
//
// The buckets are not handed over at a re-exec: the next image starts
// every address with a full bucket, which lets each client at most one
// more burst of N connections.
type admission struct {
	rates   rateTable
	refused Refused
	logs    [ruleCount]refusalLog
}

// decide returns the rule that refuses a connection from addr at now
// under the limits of c, or admitted; c.OnlyFrom is as conffmt makes it,
// masked and with IPv4 prefixes as IPv4, and an IPv4-mapped addr is taken
// as IPv4. live is what addr already takes of the service (its instances,
// and the slot its crashes hold), looked at only under per_source. The
// rules are checked in the order only_from,
// per_source, rate, so that only a connection otherwise admitted takes a
// token. A refusal is counted.
func (a *admission) decide(c *conffmt.Service, addr netip.Addr, now time.Time, live int) rule {
	addr = addr.Unmap().WithZone("")
	r := admitted
	switch {
	case len(c.OnlyFrom) > 0 && !slices.ContainsFunc(c.OnlyFrom, func(p netip.Prefix) bool { return p.Contains(addr) }):
		r = onlyFrom
	case c.PerSource > 0 && live >= c.PerSource:
		r = perSource
	case c.Rate.N > 0 && !a.rates.take(addr, now, c.Rate):
		r = overRate
	}
	switch r {
	case onlyFrom:
		a.refused.OnlyFrom++
	case perSource:
		a.refused.PerSource++
	case overRate:
		a.refused.Rate++
	}
	return r
}

// changed applies a reload: a new rate starts every address with a full
// bucket, since the old buckets were filled at the old pace. The other
// limits are read at each decision.
func (a *admission) changed(old, c *conffmt.Service) {
	if old.Rate != c.Rate {
		a.rates = rateTable{}
	}
}

// refusalLine is a log line to write about refusals by one rule: how many
// since the line before, and the last address refused.
type refusalLine struct {
	rule    rule
	refused int
	last    netip.Addr
}

// refusalLog limits the log lines of one rule's refusals.
type refusalLog struct {
	at       time.Time  // of the last line; zero before the first
	unlogged int        // refusals since
	last     netip.Addr // the last address refused
}

// noteRefusal records that r refused a connection from addr at now and
// returns the line to log now, if one is due (ok).
func (a *admission) noteRefusal(r rule, addr netip.Addr, now time.Time) (line refusalLine, ok bool) {
	l := &a.logs[r]
	l.unlogged++
	l.last = addr.Unmap()
	return a.due(r, now)
}

// due returns the line of r's refusals to log at now, if any are unlogged
// and the last line is at least refusalLogEvery old.
func (a *admission) due(r rule, now time.Time) (refusalLine, bool) {
	l := &a.logs[r]
	if l.unlogged == 0 || !l.at.IsZero() && now.Sub(l.at) < refusalLogEvery {
		return refusalLine{}, false
	}
	line := refusalLine{rule: r, refused: l.unlogged, last: l.last}
	l.at, l.unlogged = now, 0
	return line, true
}

// logDeadline is when refusals not yet logged are due: zero if none are.
func (a *admission) logDeadline() time.Time {
	var t time.Time
	for _, l := range a.logs {
		if l.unlogged > 0 {
			t = earliest(t, l.at.Add(refusalLogEvery))
		}
	}
	return t
}

// rateSlots is the size of the table of token buckets: the most client
// addresses a stream service remembers the rate of. When it is full, the
// address seen least recently is forgotten and starts again with a full
// bucket, as it would after a pause of Per. The table stays under half a
// MiB whatever the number of addresses; an attacker with more addresses
// than this gets N connections per forgotten address, no more than it
// gets from addresses that are remembered and wait out Per.
const rateSlots = 4096

// rateTable holds the token buckets of the addresses seen most recently,
// at most rateSlots, in a list from the most to the least recently seen.
// The zero value is empty; it allocates on first use.
type rateTable struct {
	index      map[netip.Addr]int32
	buckets    []bucket // never more than rateSlots
	head, tail int32    // most and least recently seen; -1 when empty
}

// bucket is one address's token bucket, kept as the time at which it is
// full again: at now it holds N - (full-now)/(Per/N) tokens, N once full
// has passed.
type bucket struct {
	addr       netip.Addr
	full       time.Time
	prev, next int32 // in the list of the table; -1 at either end
}

// take takes a token from addr's bucket, one of rate.N refilled at rate.N
// per rate.Per, and reports whether there was one.
func (t *rateTable) take(addr netip.Addr, now time.Time, rate conffmt.Rate) bool {
	b := &t.buckets[t.find(addr)]
	interval := max(rate.Per/time.Duration(rate.N), 1) // for one token to come back
	full := b.full
	if full.Before(now) {
		full = now
	}
	if full.Sub(now) > rate.Per-interval { // fewer than one token left
		return false
	}
	b.full = full.Add(interval)
	return true
}

// find returns the index of addr's bucket, moved to the head of the list:
// a new one, full, when addr has none (in the place of the least recently
// seen when the table is full).
func (t *rateTable) find(addr netip.Addr) int32 {
	if t.index == nil {
		t.index = make(map[netip.Addr]int32)
		t.head, t.tail = -1, -1
	}
	if i, ok := t.index[addr]; ok {
		t.unlink(i)
		t.push(i)
		return i
	}
	var i int32
	if len(t.buckets) < rateSlots {
		i = int32(len(t.buckets))
		t.buckets = append(t.buckets, bucket{})
	} else {
		i = t.tail
		t.unlink(i)
		delete(t.index, t.buckets[i].addr)
	}
	t.buckets[i] = bucket{addr: addr}
	t.index[addr] = i
	t.push(i)
	return i
}

// unlink takes bucket i out of the list.
func (t *rateTable) unlink(i int32) {
	b := &t.buckets[i]
	if b.prev >= 0 {
		t.buckets[b.prev].next = b.next
	} else {
		t.head = b.next
	}
	if b.next >= 0 {
		t.buckets[b.next].prev = b.prev
	} else {
		t.tail = b.prev
	}
	b.prev, b.next = -1, -1
}

// push puts bucket i, out of the list, at its head.
func (t *rateTable) push(i int32) {
	b := &t.buckets[i]
	b.prev, b.next = -1, t.head
	if t.head >= 0 {
		t.buckets[t.head].prev = i
	} else {
		t.tail = i
	}
	t.head = i
}

// remembered is the number of addresses the table holds a bucket of.
func (t *rateTable) remembered() int { return len(t.buckets) }
