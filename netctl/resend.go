package netctl

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Reliable gathering (docs/protocol.md, "Resend"): a metad keeps each
// reply it sends, and a relay each reply it forwards, for keepFor; the
// requester asks again, by request id, for the parts it lacks.
const (
	// keepFor is how long a reply is kept for resends.
	keepFor = 60 * time.Second
	// maxKept and maxKeptBytes bound the replies kept, all together; the
	// oldest are dropped first.
	maxKept      = 4096
	maxKeptBytes = 32 << 20
	// maxResends is how many resends of one kept reply are honoured: a
	// requester that lost more than that asks in vain.
	maxResends = 8
	// maxSpread bounds how long a metad may wait before it sends a reply
	// to a broadcast, whatever the request asks.
	maxSpread = time.Second
	// partGap is the pause between two parts of one reply, so that a
	// reply of many parts does not arrive as one burst.
	partGap = 200 * time.Microsecond
	// maxResendParts is the most part indexes one resend datagram names.
	maxResendParts = (MaxDatagram - overhead - resendOriginSize) / 2
	// resendOriginSize is the origin address at the start of a resend
	// body.
	resendOriginSize = 16
)

// allOrigins, as the origin of a resend to a relay, asks for every
// reply it forwarded, whole: the requester lost every datagram of some
// host and cannot name it. It is never a host's address.
var allOrigins = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// Errors of keptReplies.resend: the reasons a resend is not honoured.
var (
	errNotKept      = errors.New("no reply kept for this request")
	errNotRequester = errors.New("not the requester of the reply")
	errResendLimit  = errors.New("too many resends of this reply")
)

// encodeResend returns the body of a resend datagram: the parts of the
// reply of origin (the receiver's own reply when origin is not valid), or
// every part when parts is empty.
func encodeResend(origin netip.Addr, parts []uint16) []byte {
	b := make([]byte, resendOriginSize, resendOriginSize+2*len(parts))
	if origin.IsValid() {
		o := origin.As16()
		copy(b, o[:])
	}
	for _, p := range parts {
		b = binary.BigEndian.AppendUint16(b, p)
	}
	return b
}

// decodeResend splits the body of a resend datagram into the origin (not
// valid for the receiver's own reply) and the part indexes (none: every
// part).
func decodeResend(b []byte) (origin netip.Addr, parts []uint16, err error) {
	if len(b) < resendOriginSize || (len(b)-resendOriginSize)%2 != 0 {
		return netip.Addr{}, nil, ErrMalformed
	}
	if o := [16]byte(b[:resendOriginSize]); o != [16]byte{} {
		origin = netip.AddrFrom16(o).Unmap()
	}
	for i := resendOriginSize; i < len(b); i += 2 {
		p := binary.BigEndian.Uint16(b[i:])
		if p >= maxParts {
			return netip.Addr{}, nil, ErrMalformed
		}
		parts = append(parts, p)
	}
	return origin, parts, nil
}

// keptKey names a kept reply: a request id, and the host whose reply it
// is (not valid: this metad's own).
type keptKey struct {
	id     ID
	origin netip.Addr
}

// kept is one reply kept for resends.
type kept struct {
	key keptKey
	to  netip.AddrPort // the requester: resends are honoured from there only
	// parts holds, for this metad's own reply, the body of each part;
	// for a forwarded reply, the origin's datagram of each part (nil for
	// a part that never arrived).
	parts   [][]byte
	size    int
	expires time.Time
	resends int
	dropped bool
}

// keptReplies is the memory of replies kept for resends, bounded in count
// and bytes. It is safe for concurrent use: the loop that reads requests
// and the relays both use it.
type keptReplies struct {
	mu    sync.Mutex
	m     map[keptKey]*kept
	fifo  []*kept // oldest first; dropped entries are skipped
	bytes int
	// limits, here so that tests can lower them
	ttl               time.Duration
	maxCount, maxSize int
}

func newKeptReplies() *keptReplies {
	return &keptReplies{m: make(map[keptKey]*kept), ttl: keepFor, maxCount: maxKept, maxSize: maxKeptBytes}
}

// keepOwn keeps this metad's reply to request id, sent to to as parts.
func (k *keptReplies) keepOwn(id ID, to netip.AddrPort, parts [][]byte, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := keptKey{id: id}
	if k.m[key] != nil {
		return // a request is answered once
	}
	e := &kept{key: key, to: to, parts: parts, expires: now.Add(k.ttl)}
	for _, p := range parts {
		e.size += len(p)
	}
	k.add(e, now)
}

// keepForward keeps part of origin's reply to request id, a datagram a
// relay forwarded to to. A part that does not fit the message as first
// seen is not kept.
func (k *keptReplies) keepForward(id ID, origin netip.Addr, to netip.AddrPort, part, parts uint16, datagram []byte, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := keptKey{id, origin}
	e := k.m[key]
	if e == nil {
		e = &kept{key: key, to: to, parts: make([][]byte, parts), expires: now.Add(k.ttl)}
		k.add(e, now)
	}
	if e.dropped || int(parts) != len(e.parts) || e.parts[part] != nil {
		return
	}
	e.parts[part] = slices.Clone(datagram)
	e.size += len(datagram)
	k.bytes += len(datagram)
	k.trim(now)
}

// add files a new entry and drops what is over the bounds. The caller
// holds mu.
func (k *keptReplies) add(e *kept, now time.Time) {
	k.m[e.key] = e
	k.fifo = append(k.fifo, e)
	k.bytes += e.size
	k.trim(now)
}

// trim drops the entries whose time is over, then the oldest until the
// memory is within its bounds. The caller holds mu.
func (k *keptReplies) trim(now time.Time) {
	i := 0
	for ; i < len(k.fifo); i++ {
		e := k.fifo[i]
		over := len(k.m) > k.maxCount || k.bytes > k.maxSize
		if !e.dropped && !over && now.Before(e.expires) {
			break
		}
		k.drop(e)
	}
	if i > 0 {
		k.fifo = slices.Delete(k.fifo, 0, i)
	}
}

// drop forgets e. The caller holds mu.
func (k *keptReplies) drop(e *kept) {
	if e.dropped {
		return
	}
	e.dropped = true
	delete(k.m, e.key)
	k.bytes -= e.size
}

// resend returns the kept parts that a resend from from asks for, as
// index and bytes: those of want that are kept, once each, or every kept
// part when want is empty. It honours at most maxResends resends of one
// reply, and only from the address and port the reply went to, so that a
// resend is never bigger than the reply, never goes elsewhere, and cannot
// be repeated without bound.
func (k *keptReplies) resend(key keptKey, from netip.AddrPort, want []uint16, now time.Time) ([]keptPart, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.trim(now)
	e := k.m[key]
	switch {
	case e == nil:
		return nil, errNotKept
	case e.to != from:
		return nil, errNotRequester
	case e.resends >= maxResends:
		return nil, errResendLimit
	}
	e.resends++
	var out []keptPart
	add := func(i int) {
		if e.parts[i] != nil && !slices.ContainsFunc(out, func(p keptPart) bool { return int(p.index) == i }) {
			out = append(out, keptPart{uint16(i), len(e.parts), e.parts[i]})
		}
	}
	if len(want) == 0 {
		for i := range e.parts {
			add(i)
		}
	}
	for _, p := range want {
		if int(p) < len(e.parts) {
			add(int(p))
		}
	}
	return out, nil
}

// resendAll returns every reply forwarded for request id that a resend
// of all origins from from asks for, whole, by origin: each counts as a
// resend of that reply, with the same bounds.
func (k *keptReplies) resendAll(id ID, from netip.AddrPort, now time.Time) map[netip.Addr][]keptPart {
	k.mu.Lock()
	var keys []keptKey
	for key := range k.m {
		if key.id == id && key.origin.IsValid() {
			keys = append(keys, key)
		}
	}
	k.mu.Unlock()
	out := make(map[netip.Addr][]keptPart)
	for _, key := range keys {
		if parts, err := k.resend(key, from, nil, now); err == nil {
			out[key.origin] = parts
		}
	}
	return out
}

// keptPart is one part of a kept reply: its index, the number of parts
// of the message, and its bytes.
type keptPart struct {
	index uint16
	parts int
	b     []byte
}

// len returns how many replies are kept, and their bytes.
func (k *keptReplies) len() (int, int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m), k.bytes
}

// When a requester asks again (docs/protocol.md, "Resend").
const (
	// askAfter is how long a requester waits, after the last part of an
	// incomplete reply arrived, before it asks for the missing parts, and
	// between two asks.
	askAfter = 100 * time.Millisecond
	// maxAsks is how often a requester asks for one reply; the server
	// honours maxResends.
	maxAsks = maxResends
)

// partSet tracks which parts of one message arrived, for a requester
// that asks for the missing ones. Its zero value is a message of which
// nothing arrived.
type partSet struct {
	have []bool
	got  int
	last time.Time // when a part last arrived, or when the missing ones were asked for
	asks int
}

// add records part of parts arriving at now. It returns false for a part
// already there, or one that does not fit the message as first seen.
func (p *partSet) add(part, parts uint16, now time.Time) bool {
	if p.have == nil {
		p.have = make([]bool, parts)
	}
	if int(parts) != len(p.have) || int(part) >= len(p.have) || p.have[part] {
		return false
	}
	p.have[part] = true
	p.got++
	p.last = now
	return true
}

func (p *partSet) complete() bool { return p.have != nil && p.got == len(p.have) }

// due reports whether the missing parts are to be asked for at now.
func (p *partSet) due(now time.Time) bool {
	return p.have != nil && !p.complete() && p.asks < maxAsks && now.Sub(p.last) >= askAfter
}

// ask returns the body of a resend of the missing parts of origin's
// reply, and counts the ask as made at now. When more parts are missing
// than one resend can name, it asks for every part.
func (p *partSet) ask(origin netip.Addr, now time.Time) []byte {
	p.asks++
	p.last = now
	var missing []uint16
	for i, ok := range p.have {
		if !ok {
			missing = append(missing, uint16(i))
		}
	}
	if len(missing) > maxResendParts {
		missing = nil
	}
	return encodeResend(origin, missing)
}

// earlier returns the earlier of a and b.
func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
