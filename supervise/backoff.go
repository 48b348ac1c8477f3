package supervise

import (
	"syscall"
	"time"
)

// maxShift bounds the exponent of the backoff so that 1s<<k cannot
// overflow a time.Duration; 1s<<32 is far beyond any sensible ceiling.
const maxShift = 32

// Delay is the wait before the next automatic start after the k-th crash in
// a row: min(1s * 2^(k-1), ceiling). No crash (k <= 0) means no wait.
func Delay(k int, ceiling time.Duration) time.Duration {
	if k <= 0 {
		return 0
	}
	shift := k - 1
	if shift > maxShift {
		shift = maxShift
	}
	d := time.Second << shift
	if d > ceiling {
		return ceiling
	}
	return d
}

// Outcome classifies how one run of an instance ended.
type Outcome uint8

const (
	// Clean: exit status 0, or ended by the signal metad sent it.
	Clean Outcome = iota
	// Failed: failed after running at least the crash window.
	Failed
	// Crashed: failed within the crash window; counts towards backoff.
	Crashed
	// PeerGone: a stream instance that failed because its client went
	// away (SPEC §11): not a crash, and not the program's fault.
	PeerGone
)

func (o Outcome) String() string {
	switch o {
	case Clean:
		return "clean"
	case Failed:
		return "failed"
	case Crashed:
		return "crashed"
	case PeerGone:
		return "peer-gone"
	default:
		return "outcome(?)"
	}
}

// Classify says how a run that lasted ran ended. code is the exit status
// (-1 when killed by a signal), sig the killing signal (0 when it exited),
// and asked whether metad had asked the instance to stop: whatever an
// instance does once asked to stop is not a failure.
func Classify(ran, window time.Duration, code int, sig syscall.Signal, asked bool) Outcome {
	if asked || (sig == 0 && code == 0) {
		return Clean
	}
	if ran < window {
		return Crashed
	}
	return Failed
}

// PeerWentAway reports whether a stream instance's failure says that its
// client went away: it died of SIGPIPE, or exited with 141, the status a
// shell gives a command that died of SIGPIPE. metad cannot see an EPIPE or
// ECONNRESET that the program turned into another exit status; such a
// crash is held against the client's address only (see admission).
func PeerWentAway(code int, sig syscall.Signal) bool {
	return sig == syscall.SIGPIPE || code == 128+int(syscall.SIGPIPE)
}

// NextCrashes is the crash count after a run with outcome o, given k crashes
// in a row before it: a crash adds one, a peer that went away changes
// nothing, anything else resets the count.
func NextCrashes(k int, o Outcome) int {
	switch o {
	case Crashed:
		return k + 1
	case PeerGone:
		return k
	default:
		return 0
	}
}

// backoff is a service's one backoff record: the crashes in a row and
// the time before which nothing starts automatically.
type backoff struct {
	crashes int
	until   time.Time
}

// record applies outcome o at now and returns the delay it imposes (0
// when none).
func (b *backoff) record(now time.Time, o Outcome, ceiling time.Duration) time.Duration {
	b.crashes = NextCrashes(b.crashes, o)
	switch o {
	case Crashed:
		d := Delay(b.crashes, ceiling)
		b.until = now.Add(d)
		return d
	case PeerGone:
		return 0
	default:
		b.until = time.Time{}
		return 0
	}
}

// reset forgets every crash: a manual start overrides the backoff.
func (b *backoff) reset() { *b = backoff{} }
