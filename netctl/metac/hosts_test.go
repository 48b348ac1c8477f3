package metac

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"metad/netctl"
)

func TestReadHostsFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, text string
		want       []string
		err        string
	}{
		{"hosts, comments and blanks", "# the fleet\nweb1\n\n  web2.example.com  # the second\n10.0.0.7\nweb1\n[fe80::1]:612\n",
			[]string{"web1", "web2.example.com", "10.0.0.7", "[fe80::1]:612"}, ""},
		{"empty", "# nobody\n\n", nil, ""},
		{"two on a line", "web1\nweb2 web3\n", nil, ":2: one host a line, got \"web2 web3\""},
	}
	for _, tt := range tests {
		path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
		if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readHostsFile(path)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), path+tt.err) {
				t.Errorf("%s: got %q, %v; want an error containing %q", tt.name, got, err, path+tt.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
	if _, err := readHostsFile(filepath.Join(dir, "absent")); err == nil || !strings.Contains(err.Error(), "cannot read hosts file") {
		t.Errorf("absent file: got %v, want cannot read hosts file", err)
	}
}

func TestMissingHosts(t *testing.T) {
	ok := func(host, name string) netctl.Answer {
		return netctl.Answer{Host: host, Reply: &netctl.Reply{OK: true, Name: name}}
	}
	answers := []netctl.Answer{
		ok("gw1", "gw1"),                   // a relay, named as given
		ok("10.0.0.2", "web2"),             // by its own name
		ok("10.0.0.3", "web3.example.com"), // by its own name, with a domain
		ok("10.0.0.4", "localhost"),        // by its address only
		ok("10.0.0.5:612", "x"),            // at another port
		{Host: "10.0.0.6", Err: "incomplete reply: 1 of 2 parts arrived"}, // answered, in part
	}
	addrs := map[string][]netip.Addr{
		"web4":     {netip.MustParseAddr("10.0.0.4")},
		"10.0.0.5": {netip.MustParseAddr("10.0.0.5")},
		"web9":     {netip.MustParseAddr("10.0.0.9")},
	}
	expected := []string{"gw1", "web2.example.com", "web3", "web4", "10.0.0.5", "10.0.0.6", "web9", "nowhere", "10.0.0.2:611", "10"}
	got := missingHosts(expected, answers, func(h string) []netip.Addr { return addrs[h] })
	if want := []string{"web9", "nowhere", "10"}; !slices.Equal(got, want) {
		t.Errorf("got missing %q, want %q", got, want)
	}
	if got := missingHosts(nil, answers, nil); got != nil {
		t.Errorf("nothing expected: got %q, want nothing missing", got)
	}
}

func TestSameHostName(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"web1", "web1", true},
		{"WEB1", "web1", true},
		{"web1", "web1.example.com", true},
		{"web1.example.com", "web1", true},
		{"web1.example.com", "web1.example.org", false},
		{"web1", "web2", false},
		{"10", "10.0.0.1", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if got := sameHostName(tt.a, tt.b); got != tt.want {
			t.Errorf("sameHostName(%q, %q): got %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
