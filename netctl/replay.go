package netctl

import (
	"errors"
	"time"
)

// Replay protection (docs/protocol.md): a request is accepted only when its
// time is within Skew of the receiver's clock and its nonce has not been
// seen. A nonce must be remembered for as long as a datagram carrying it
// could still pass the time check: a request stamped Skew ahead of the
// receiver's clock passes until the clock has moved 2*Skew on.
const (
	// Skew is how far a datagram's time may be from the receiver's clock.
	Skew = 30 * time.Second
	// seenFor is how long nonces and request ids are remembered.
	seenFor = 2 * Skew
	// maxSeen bounds each memory of nonces and request ids: at about 100
	// bytes an entry, a few MiB at most.
	maxSeen = 1 << 16
)

// fresh reports whether a datagram made at t may be accepted at now.
func fresh(t, now time.Time) bool {
	d := now.Sub(t)
	return d <= Skew && d >= -Skew
}

// errSeenFull is returned by seen.add when every slot holds a key that is
// still within its time. Refusing then, rather than forgetting a key
// early, keeps a flood from reopening the replay window.
var errSeenFull = errors.New("too many requests in the replay window")

// seen remembers 16-byte keys (nonces, request ids) for a fixed time, in
// bounded memory. Its zero value is not usable: use newSeen. It is not
// safe for concurrent use; its owner is the goroutine that reads requests.
type seen struct {
	ttl  time.Duration
	max  int
	keys map[[16]byte]struct{}
	fifo []seenEntry // in the order added, so expiries only grow
	head int         // fifo[:head] are gone
}

type seenEntry struct {
	key     [16]byte
	expires time.Time
}

func newSeen(ttl time.Duration, max int) *seen {
	return &seen{ttl: ttl, max: max, keys: make(map[[16]byte]struct{})}
}

// add remembers key at now. It returns false if key is already
// remembered, and errSeenFull when there is no room for it.
func (s *seen) add(key [16]byte, now time.Time) (bool, error) {
	s.expire(now)
	if _, ok := s.keys[key]; ok {
		return false, nil
	}
	if len(s.keys) >= s.max {
		return false, errSeenFull
	}
	s.keys[key] = struct{}{}
	s.fifo = append(s.fifo, seenEntry{key, now.Add(s.ttl)})
	return true, nil
}

// expire forgets the keys whose time is over, and compacts the queue when
// most of it is gone.
func (s *seen) expire(now time.Time) {
	for s.head < len(s.fifo) && !now.Before(s.fifo[s.head].expires) {
		delete(s.keys, s.fifo[s.head].key)
		s.fifo[s.head] = seenEntry{}
		s.head++
	}
	if s.head > 0 && s.head >= len(s.fifo)/2 {
		s.fifo = append(s.fifo[:0], s.fifo[s.head:]...)
		s.head = 0
	}
}

// len returns how many keys are remembered.
func (s *seen) len() int { return len(s.keys) }

// limiter lets through a burst of events and then one per interval: the
// rate limit of the log of refused datagrams. It is not safe for
// concurrent use.
type limiter struct {
	every      time.Duration
	burst      int
	tokens     int
	last       time.Time // when tokens was last refilled
	suppressed int       // events refused since the last one allowed
}

func newLimiter(every time.Duration, burst int) *limiter {
	return &limiter{every: every, burst: burst, tokens: burst}
}

// allow reports whether an event at now may be logged and, if so, how
// many were suppressed before it.
func (l *limiter) allow(now time.Time) (bool, int) {
	if l.last.IsZero() {
		l.last = now
	}
	if n := int(now.Sub(l.last) / l.every); n > 0 {
		l.tokens = min(l.burst, l.tokens+n)
		l.last = l.last.Add(time.Duration(n) * l.every)
	}
	if l.tokens == 0 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	n := l.suppressed
	l.suppressed = 0
	return true, n
}
