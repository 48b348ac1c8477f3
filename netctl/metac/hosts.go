package metac

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"metad/netctl"
)

// maxHostsFile bounds the file of --hosts: a fleet of a hundred thousand
// hosts fits.
const maxHostsFile = 8 << 20

// lookupWait bounds the name lookups of missingHosts, all together: a
// host whose addresses are not known by then is missing unless it
// answered under its name.
const lookupWait = 2 * time.Second

// readHostsFile reads the hosts of --hosts: one host name or address a
// line (HOST:PORT too), each once, in order; "#" starts a comment, blank
// lines do not count.
func readHostsFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read hosts file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read hosts file: %w", err)
	}
	if fi.Size() > maxHostsFile {
		return nil, fmt.Errorf("cannot read hosts file %q: over %d bytes", path, maxHostsFile)
	}
	var hosts []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		words := strings.Fields(line)
		switch {
		case len(words) == 0:
			continue
		case len(words) > 1:
			return nil, fmt.Errorf("%s:%d: one host a line, got %q", path, n, strings.TrimSpace(line))
		}
		if !slices.Contains(hosts, words[0]) {
			hosts = append(hosts, words[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read hosts file %q: %w", path, err)
	}
	return hosts, nil
}

// missingHosts returns the hosts of expected, in order, that none of
// answers comes from. An answer comes from a host when it is named so,
// when the host's own name in the reply is that name (with or without
// its domain), or when it comes from one of the host's addresses, which
// addrsOf returns (nil when unknown).
func missingHosts(expected []string, answers []netctl.Answer, addrsOf func(host string) []netip.Addr) []string {
	var missing []string
	for _, e := range expected {
		name := stripPort(e)
		found := slices.ContainsFunc(answers, func(a netctl.Answer) bool {
			return a.Host == e || stripPort(a.Host) == name ||
				a.Reply != nil && sameHostName(a.Reply.Name, name)
		})
		if !found {
			addrs := addrsOf(name)
			found = slices.ContainsFunc(answers, func(a netctl.Answer) bool {
				at, err := netip.ParseAddr(stripPort(a.Host))
				return err == nil && slices.Contains(addrs, at.Unmap())
			})
		}
		if !found {
			missing = append(missing, e)
		}
	}
	return missing
}

// stripPort returns host without a ":PORT".
func stripPort(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// sameHostName reports whether two host names name the same host: the
// same, or the same but for the domain that one of them leaves out.
// Addresses are only the same as themselves.
func sameHostName(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	if strings.EqualFold(a, b) {
		return true
	}
	if _, err := netip.ParseAddr(a); err == nil {
		return false
	}
	if _, err := netip.ParseAddr(b); err == nil {
		return false
	}
	ah, _, aDomain := strings.Cut(a, ".")
	bh, _, bDomain := strings.Cut(b, ".")
	switch {
	case aDomain && !bDomain:
		return strings.EqualFold(ah, b)
	case !aDomain && bDomain:
		return strings.EqualFold(a, bh)
	}
	return false
}

// lookupHost returns the addresses of host, or nil when ctx is done
// before they are known.
func lookupHost(ctx context.Context, host string) []netip.Addr {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs
}
