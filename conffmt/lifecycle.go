package conffmt

// Parsing and printing of the values of the lifecycle, health and
// admission options: ready= and check= (probes), after= and needs=
// (service names), restart=, on_failure= and on_success=, rate= and
// only_from=.

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kballard/go-shellquote"
)

// Defaults and limits of the lifecycle and health options.
const (
	defaultReadyTimeout = 90 * time.Second
	defaultCheckEvery   = 10 * time.Second
	defaultCheckTimeout = 5 * time.Second
	defaultCheckFails   = 3
	maxReadyFD          = maxCount // the largest N of ready=fd:N
)

// String returns the ready= value that r is written as: started, notify,
// fd:N, or the probe as written.
func (r Ready) String() string {
	switch r.Kind {
	case ReadyStarted:
		return "started"
	case ReadyNotify:
		return "notify"
	case ReadyFD:
		return "fd:" + strconv.Itoa(r.FD)
	default:
		return r.Probe.Text
	}
}

// String returns the policy as restart= spells it.
func (r Restart) String() string {
	switch r {
	case RestartAlways:
		return "always"
	case RestartOnFailure:
		return "on-failure"
	case RestartNever:
		return "never"
	default:
		return "restart(" + strconv.Itoa(int(r)) + ")"
	}
}

// String returns the action as on_failure= and on_success= spell it.
func (a Action) String() string {
	switch a {
	case ActionNone:
		return "none"
	case ActionShutdown:
		return "shutdown"
	default:
		return "action(" + strconv.Itoa(int(a)) + ")"
	}
}

// String returns the rate as rate= is written: N/DUR.
func (r Rate) String() string { return strconv.Itoa(r.N) + "/" + formatDuration(r.Per) }

// parseReady parses ready= for a service of class c, 0 when the class is
// not known. A stream's instance is ready when it is started: its socket
// is bound already.
func parseReady(r *Resolver, c Class, val string) (Ready, error) {
	switch {
	case val == "started":
		return Ready{Kind: ReadyStarted}, nil
	case c == Stream:
		return Ready{}, fmt.Errorf("invalid ready %q: a stream service is ready once its socket is bound, so only ready=started applies", val)
	case val == "notify":
		return Ready{Kind: ReadyNotify}, nil
	case strings.HasPrefix(val, "fd:"):
		n, ok := parseDigits(val[len("fd:"):], maxReadyFD)
		if !ok || n < 3 {
			return Ready{}, fmt.Errorf("invalid ready %q: want fd:N, N a descriptor from 3 to %d", val, maxReadyFD)
		}
		if c == Listener && n == 3 {
			return Ready{}, fmt.Errorf("invalid ready %q: a listener's fd 3 is its listening socket; want fd:4 or more", val)
		}
		return Ready{Kind: ReadyFD, FD: int(n)}, nil
	case strings.HasPrefix(val, "tcp:"), strings.HasPrefix(val, "exec:"):
		p, err := parseProbe(r, "ready", val)
		if err != nil {
			return Ready{}, err
		}
		if p.Kind == ProbeExec {
			return Ready{Kind: ReadyExec, Probe: p}, nil
		}
		return Ready{Kind: ReadyTCP, Probe: p}, nil
	}
	return Ready{}, fmt.Errorf("invalid ready %q: want started, notify, fd:N, tcp:[ADDR:]PORT or exec:COMMAND", val)
}

// parseCheck parses check=.
func parseCheck(r *Resolver, val string) (Probe, error) {
	if strings.HasPrefix(val, "tcp:") || strings.HasPrefix(val, "exec:") {
		return parseProbe(r, "check", val)
	}
	u, err := url.Parse(val)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" {
		return Probe{}, fmt.Errorf("invalid check %q: want tcp:[ADDR:]PORT, http://HOST:PORT/PATH, https://HOST:PORT/PATH or exec:COMMAND", val)
	}
	if u.Hostname() == "" {
		return Probe{}, fmt.Errorf("invalid check %q: want a URL with a host, %s://HOST:PORT/PATH", val, u.Scheme)
	}
	return Probe{Kind: ProbeHTTP, URL: val, Text: val}, nil
}

// parseProbe parses val, tcp:[ADDR:]PORT or exec:COMMAND, the value of
// the option key.
func parseProbe(r *Resolver, key, val string) (Probe, error) {
	p := Probe{Text: val}
	if command, ok := strings.CutPrefix(val, "exec:"); ok {
		argv, err := shellquote.Split(command)
		switch {
		case err != nil:
			return Probe{}, fmt.Errorf("invalid %s %q: COMMAND has an unterminated quote or a backslash at its end", key, val)
		case len(argv) == 0:
			return Probe{}, fmt.Errorf("invalid %s %q: want exec:COMMAND [ARG...], the command not empty", key, val)
		}
		p.Kind, p.Argv = ProbeExec, argv
		return p, nil
	}
	target := strings.TrimPrefix(val, "tcp:")
	addr, port := netip.AddrFrom4([4]byte{127, 0, 0, 1}), target
	if strings.Contains(target, ":") {
		host, portText, err := net.SplitHostPort(target)
		a, aerr := netip.ParseAddr(host)
		if err != nil || aerr != nil {
			return Probe{}, fmt.Errorf("invalid %s %q: want tcp:[ADDR:]PORT, ADDR an IP address, IPv6 in brackets (tcp:[::1]:8080)", key, val)
		}
		addr, port = a, portText
	}
	n, err := parsePort(r, port)
	if err != nil {
		return Probe{}, fmt.Errorf("invalid %s %q: %w", key, val, err)
	}
	p.Kind, p.Addr = ProbeTCP, netip.AddrPortFrom(addr, uint16(n))
	return p, nil
}

// parseNames parses NAME[,NAME...], the value of after= or needs=.
func parseNames(key, val string) ([]string, error) {
	names := strings.Split(val, ",")
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if !validName(name) {
			return nil, fmt.Errorf(`invalid %s %q: want NAME[,NAME...], each name made of letters, digits, "_", "-" and "."`, key, val)
		}
		if seen[name] {
			return nil, fmt.Errorf("invalid %s %q: %q is named twice", key, val, name)
		}
		seen[name] = true
	}
	return names, nil
}

// mergeNames returns after followed by the names of needs that it does
// not hold: a service's After, from its after= and needs= names. It
// returns after itself when needs is empty.
func mergeNames(after, needs []string) []string {
	if len(needs) == 0 {
		return after
	}
	out := append([]string(nil), after...)
	for _, name := range needs {
		if !slices.Contains(after, name) {
			out = append(out, name)
		}
	}
	return out
}

// writtenAfter returns the names after= is printed with: the shortest
// start of s.After that, with the needs= names added as Parse adds them,
// makes s.After again. Names that needs= gives are then written once.
func writtenAfter(s *Service) []string {
	for n := range len(s.After) {
		if slices.Equal(mergeNames(s.After[:n], s.Needs), s.After) {
			return s.After[:n]
		}
	}
	return s.After
}

// formatNames returns the value of a list option, NAME[,NAME...], or
// nothing for an empty list.
func formatNames(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	return []string{strings.Join(names, ",")}
}

// parseRestart parses restart=.
func parseRestart(val string) (Restart, error) {
	for _, r := range []Restart{RestartAlways, RestartOnFailure, RestartNever} {
		if val == r.String() {
			return r, nil
		}
	}
	return 0, fmt.Errorf("invalid restart %q: want always, on-failure or never", val)
}

// parseAction parses on_failure= or on_success=, the option key.
func parseAction(key, val string) (Action, error) {
	for _, a := range []Action{ActionNone, ActionShutdown} {
		if val == a.String() {
			return a, nil
		}
	}
	return 0, fmt.Errorf("invalid %s %q: want none or shutdown", key, val)
}

// parseRate parses rate=N/DUR: N connections from 1 to maxCount per DUR,
// more than 0.
func parseRate(val string) (Rate, error) {
	n, per, ok := strings.Cut(val, "/")
	count, countOK := parseDigits(n, maxCount)
	d, err := ParseDuration(per)
	if !ok || !countOK || count < 1 || err != nil || d == 0 {
		return Rate{}, fmt.Errorf("invalid rate %q: want N/DUR, N connections from 1 to %d per DUR more than 0 (10/1s, 100/1m)", val, maxCount)
	}
	return Rate{N: int(count), Per: d}, nil
}

// parseOnlyFrom parses only_from=CIDR[,CIDR...]. A bare address is a
// prefix of its full length; an IPv4-mapped IPv6 prefix is made IPv4;
// every prefix is masked, and one given twice is kept once.
func parseOnlyFrom(val string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(val, ",") {
		p, err := parsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("invalid only_from %q: %q is not an address or a CIDR prefix (10.0.0.0/8, 2001:db8::/32, 192.0.2.7)", val, item)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// parsePrefix parses one item of only_from=, masked and with an IPv4
// address as IPv4. Addresses with a zone are refused: a zone is no part
// of a client's address.
func parsePrefix(item string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(item, "/") {
		var err error
		if p, err = netip.ParsePrefix(item); err != nil {
			return p, err
		}
	} else {
		a, err := netip.ParseAddr(item)
		if err != nil || a.Zone() != "" {
			return p, fmt.Errorf("not an address")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	p = p.Masked()
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

// formatPrefixes returns the value of only_from=, or nothing for none.
func formatPrefixes(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	items := make([]string, len(ps))
	for i, p := range ps {
		items[i] = p.String()
	}
	return []string{strings.Join(items, ",")}
}
