package conffmt

// Parsing and printing of option values: numbers, durations, ports,
// environment names and signals.

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parseCount parses a whole number from lo to hi for the option key.
func parseCount(key, val string, lo, hi int) (int, error) {
	n, ok := parseDigits(val, int64(hi))
	if !ok || n < int64(lo) {
		return 0, fmt.Errorf("invalid %s %q: want a whole number from %d to %d", key, val, lo, hi)
	}
	return int(n), nil
}

// parseDigits parses val when it is only decimal digits and at most hi,
// which must be below math.MaxInt64/10.
func parseDigits(val string, hi int64) (int64, bool) {
	if val == "" || len(val) > 20 {
		return 0, false
	}
	var n int64
	for _, c := range []byte(val) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
		if n > hi {
			return 0, false
		}
	}
	return n, true
}

// ParseDuration parses a DUR of the config language: whole seconds ("30")
// or a Go duration ("500ms", "1h30m"), not negative. Its error says what
// is wrong without repeating s.
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := parseDigits(s, math.MaxInt64/int64(time.Second)); ok {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, errors.New("want whole seconds (30) or a duration (500ms, 1h30m)")
	case d < 0:
		return 0, errors.New("must not be negative")
	}
	return d, nil
}

// parseDuration parses val with ParseDuration for the option key,
// refusing 0 too when positive is true.
func parseDuration(key, val string, positive bool) (time.Duration, error) {
	d, err := ParseDuration(val)
	if err == nil && d == 0 && positive {
		err = errors.New("must be more than 0")
	}
	if err != nil {
		return 0, fmt.Errorf("invalid %s %q: %w", key, val, err)
	}
	return d, nil
}

// formatDuration writes d as time.Duration.String does, without the zero
// units it leaves at the end: "5m", "1h30m", "1h".
func formatDuration(d time.Duration) string {
	s := d.String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

// parsePort parses a port number from 1 to 65535 or looks up a service name.
func parsePort(r *Resolver, val string) (int, error) {
	if n, ok := parseDigits(val, math.MaxUint16); ok {
		if n == 0 {
			return 0, fmt.Errorf("invalid port %q: want 1 to 65535 or a name from /etc/services", val)
		}
		return int(n), nil
	}
	if val == "" || val[0] >= '0' && val[0] <= '9' {
		return 0, fmt.Errorf("invalid port %q: want 1 to 65535 or a name from /etc/services", val)
	}
	n, err := r.lookupPort(val)
	if err != nil {
		return 0, err
	}
	if n < 1 || n > math.MaxUint16 {
		return 0, fmt.Errorf("invalid port %q: it names port %d, outside 1 to 65535", val, n)
	}
	return n, nil
}

// validEnvName says whether name can be an environment variable's name.
func validEnvName(name string) bool {
	if name == "" || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for _, c := range []byte(name) {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// maxSignal is the highest signal number ParseSignal takes (the last
// real-time signal on most Linux architectures).
const maxSignal = 64

// ParseSignal parses a signal as metad's config and metac take one: a name
// with or without "SIG", in any case, or a number from 1 to 64.
func ParseSignal(val string) (syscall.Signal, error) {
	sig := unix.SignalNum("SIG" + strings.TrimPrefix(strings.ToUpper(val), "SIG"))
	if n, ok := parseDigits(val, maxSignal); ok && n > 0 {
		sig = syscall.Signal(n)
	}
	if sig == 0 {
		return 0, fmt.Errorf("invalid signal %q: want a name (TERM, SIGINT...) or a number from 1 to %d", val, maxSignal)
	}
	return sig, nil
}

// parseStop parses the signal of stop= (see ParseSignal). It refuses the
// job-control signals, which pause or resume a process instead of ending
// it.
func parseStop(val string) (syscall.Signal, error) {
	sig, err := ParseSignal(val)
	if err != nil {
		return 0, fmt.Errorf("invalid stop %q: want a signal name (TERM, SIGINT...) or a number from 1 to %d", val, maxSignal)
	}
	switch sig {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU, unix.SIGCONT:
		return 0, fmt.Errorf("invalid stop %q: a job-control signal pauses or resumes a process instead of ending it", val)
	}
	return sig, nil
}

// signalName returns the name stop= is printed with: the signal's name
// without "SIG" when it has one, else its number.
func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return strings.TrimPrefix(name, "SIG")
	}
	return strconv.Itoa(int(sig))
}
