package notify

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Watchdog is what a WATCHDOG= assignment asks for.
type Watchdog uint8

// The WATCHDOG= values.
const (
	WatchdogNone    Watchdog = iota // no WATCHDOG=, or one with another value
	WatchdogPing                    // WATCHDOG=1: alive; the watchdog's period starts again
	WatchdogTrigger                 // WATCHDOG=trigger: treat the program as hung now
)

// String returns the value as sent: "", "1" or "trigger".
func (w Watchdog) String() string {
	switch w {
	case WatchdogNone:
		return ""
	case WatchdogPing:
		return "1"
	case WatchdogTrigger:
		return "trigger"
	default:
		return "unknown"
	}
}

// Message is one notification: what its assignments ask. The zero value
// asks nothing. A field that may legitimately be zero comes with a Has
// field that tells whether it was given; a value given but malformed is
// left out, as systemd leaves it out (MAINPID=abc is no MAINPID).
//
// READY=1, STOPPING=1 and RELOADING=1 may come together; systemd gives
// STOPPING=1 precedence over the other two, and READY=1 over
// RELOADING=1 (both: started, and done reloading).
type Message struct {
	Ready     bool // READY=1: started, or done reloading
	Stopping  bool // STOPPING=1: shutting down
	Reloading bool // RELOADING=1: reloading its configuration

	// Status is STATUS=, the text to show. "" clears the status:
	// sent empty, or not valid UTF-8 (which systemd does not keep).
	Status    string
	HasStatus bool

	// MainPID is MAINPID=N: the program's main process is now N. 0: not
	// given, or not a valid process ID (1 to 2^31-1). Whether N is a
	// process of the service is the caller's to check: systemd takes
	// one from outside it only from a sender running as root.
	MainPID int

	Watchdog Watchdog // WATCHDOG=

	// WatchdogTimeout is WATCHDOG_USEC=N: the watchdog's period from now
	// on. A period too long for a Duration is the longest Duration.
	WatchdogTimeout    time.Duration
	HasWatchdogTimeout bool

	// ExtendTimeout is EXTEND_TIMEOUT_USEC=N: the current start, reload
	// or stop may take this much longer from now. Clamped as
	// WatchdogTimeout.
	ExtendTimeout    time.Duration
	HasExtendTimeout bool

	// Errno is ERRNO=N, the program's last error: 0 to 4095, given as a
	// number or a name (EINVAL).
	Errno    syscall.Errno
	HasErrno bool
}

// The reasons Parse refuses a datagram, as systemd refuses it.
var (
	errEmbeddedNUL = errors.New("not a notification: NUL byte inside")
	errBackslash   = errors.New("not a notification: ends in a backslash")
)

// Parse reads a notification datagram as systemd does: one trailing NUL
// byte is allowed and dropped, any other NUL makes it no notification;
// the text is split into assignments at every run of newlines and
// carriage returns, where a backslash takes the next byte literally
// (newline included) and one at the very end makes it no notification.
// READY=1, STOPPING=1 and RELOADING=1 count wherever they stand; of the
// other keys, only the first assignment counts, even when its value is
// malformed (WATCHDOG=x before WATCHDOG=1 is no WATCHDOG). Keys that systemd knows but metad does not
// use (FDSTORE=, FDNAME=, MAINPIDFD=, MONOTONIC_USEC=, NOTIFYACCESS=,
// BUSERROR=, BARRIER=...) and unknown keys are ignored. An empty
// datagram is a Message that asks nothing.
//
// Parse is pure and safe for concurrent use.
func Parse(b []byte) (Message, error) {
	if n := len(b); n > 0 && b[n-1] == 0 {
		b = b[:n-1]
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return Message{}, errEmbeddedNUL
	}
	lines, err := split(b)
	if err != nil {
		return Message{}, err
	}
	var m Message
	first := map[string]string{}
	for _, l := range lines {
		switch l {
		case "READY=1":
			m.Ready = true
		case "STOPPING=1":
			m.Stopping = true
		case "RELOADING=1":
			m.Reloading = true
		}
		key, val, ok := strings.Cut(l, "=")
		if _, seen := first[key]; ok && !seen {
			first[key] = val
		}
	}
	if v, ok := first["STATUS"]; ok {
		m.HasStatus = true
		if utf8.ValidString(v) {
			m.Status = v
		}
	}
	if v, ok := first["MAINPID"]; ok {
		if pid, ok := atou64(v); ok && pid >= 1 && pid <= math.MaxInt32 {
			m.MainPID = int(pid)
		}
	}
	switch first["WATCHDOG"] {
	case "1":
		m.Watchdog = WatchdogPing
	case "trigger":
		m.Watchdog = WatchdogTrigger
	}
	if v, ok := first["WATCHDOG_USEC"]; ok {
		m.WatchdogTimeout, m.HasWatchdogTimeout = usec(v)
	}
	if v, ok := first["EXTEND_TIMEOUT_USEC"]; ok {
		m.ExtendTimeout, m.HasExtendTimeout = usec(v)
	}
	if v, ok := first["ERRNO"]; ok {
		m.Errno, m.HasErrno = parseErrno(v)
	}
	return m, nil
}

// split cuts b into words at runs of '\n' and '\r', a backslash taking
// the next byte into the word whatever it is: systemd's
// strv_split_newlines, which is extract_first_word without flags.
func split(b []byte) ([]string, error) {
	var words []string
	var w []byte
	in := false // inside a word
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '\\':
			if i+1 == len(b) {
				return nil, errBackslash
			}
			i++
			w = append(w, b[i])
			in = true
		case '\n', '\r':
			if in {
				words = append(words, string(w))
				w, in = w[:0], false
			}
		default:
			w = append(w, c)
			in = true
		}
	}
	if in {
		words = append(words, string(w))
	}
	return words, nil
}

// usec reads a count of microseconds as systemd's safe_atou64 does, and
// converts it to a Duration, clamped to the longest.
func usec(s string) (time.Duration, bool) {
	v, ok := atou64(s)
	if !ok {
		return 0, false
	}
	if v > math.MaxInt64/uint64(time.Microsecond) {
		return math.MaxInt64, true
	}
	return time.Duration(v) * time.Microsecond, true
}

// errnoMax is the largest errno systemd accepts (ERRNO_MAX).
const errnoMax = 4095

// parseErrno reads ERRNO='s value as systemd's parse_errno does: an
// errno name, or a number from 0 to errnoMax.
func parseErrno(s string) (syscall.Errno, bool) {
	if e := errnoByName(s); e != 0 {
		return e, true
	}
	// safe_atoi: a C int, sign allowed.
	mag, neg, ok := strtoull(mangle(skipSpace(s)))
	if !ok || mag > errnoMax {
		return 0, false
	}
	if neg && mag != 0 {
		return 0, false
	}
	return syscall.Errno(mag), true
}

// errnoByName returns the errno called name (case matters), or 0.
func errnoByName(name string) syscall.Errno {
	if !strings.HasPrefix(name, "E") {
		return 0
	}
	// The aliases C's errno.h defines besides the names unix knows.
	switch name {
	case "EWOULDBLOCK":
		return unix.EWOULDBLOCK
	case "EDEADLOCK":
		return unix.EDEADLK
	case "ENOTSUP":
		return unix.ENOTSUP
	}
	for e := syscall.Errno(1); e < 256; e++ {
		if unix.ErrnoName(e) == name {
			return e
		}
	}
	return 0
}

// atou64 reads an unsigned number as systemd's safe_atou64 does: leading
// spaces, tabs and newlines skipped, then "0b" for binary, "0o" for
// octal, or C's prefixes ("0x" hexadecimal, "0" octal), an optional sign,
// and nothing after the digits. A negative number is refused, but -0
// is 0.
func atou64(s string) (uint64, bool) {
	v, neg, ok := strtoull(mangle(skipSpace(s)))
	if !ok || neg && v != 0 {
		return 0, false
	}
	return v, true
}

// skipSpace drops systemd's WHITESPACE from the front of s.
func skipSpace(s string) string { return strings.TrimLeft(s, " \t\n\r") }

// mangle reads systemd's own base prefixes, "0b" and "0o", and returns
// the rest of s with the base it asks (0: C's rules).
func mangle(s string) (string, int) {
	switch {
	case strings.HasPrefix(s, "0b"), strings.HasPrefix(s, "0B"):
		return s[2:], 2
	case strings.HasPrefix(s, "0o"), strings.HasPrefix(s, "0O"):
		return s[2:], 8
	}
	return s, 0
}

// strtoull reads s whole as C's strtoull does, in base (0: "0x"
// hexadecimal, "0" octal, else decimal): after leading white space and
// an optional sign, one digit or more and nothing else. It returns the
// magnitude and whether a minus sign came first; a number past 64 bits
// is not ok.
func strtoull(s string, base int) (v uint64, neg bool, ok bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	switch {
	case base == 0 && len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") && digit(s[2]) < 16:
		s, base = s[2:], 16
	case base == 0 && strings.HasPrefix(s, "0"):
		base = 8
	case base == 0:
		base = 10
	}
	if s == "" {
		return 0, false, false
	}
	for i := 0; i < len(s); i++ {
		d := digit(s[i])
		if d >= base {
			return 0, false, false
		}
		if v > (math.MaxUint64-uint64(d))/uint64(base) {
			return 0, false, false
		}
		v = v*uint64(base) + uint64(d)
	}
	return v, neg, true
}

// digit returns the value of c as a digit of bases up to 36, or 36 for
// a byte that is no digit.
func digit(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'z':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'Z':
		return int(c-'A') + 10
	}
	return 36
}
