package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Addresses of the fleet lab: subnets A 10.214.1.0/24, B 10.214.2.0/24,
// C 10.214.3.0/24. Both relays are on A and B, so both reach a1 and b1,
// and each other; only relay2 reaches C.
const (
	fleetA1      = "10.214.1.2"
	fleetRelay1  = "10.214.1.3" // also 10.214.2.3 on B
	fleetRelay2  = "10.214.1.4" // also 10.214.2.4 on B, 10.214.3.4 on C
	fleetB1      = "10.214.2.2"
	fleetC1      = "10.214.3.2"
	fleetClient  = "10.214.1.100" // where metac runs; no metad
	fleetNowhere = "10.214.3.9"   // no host
)

func TestCtlFleet(t *testing.T) {
	lab := newNetLab(t)
	for _, br := range []string{"A", "B", "C"} {
		lab.addBridge(br)
	}
	a1, r1, r2, b1, c1, client := lab.addNS("a1"), lab.addNS("relay1"), lab.addNS("relay2"), lab.addNS("b1"), lab.addNS("c1"), lab.addNS("client")
	lab.attach(a1, "eth0", "A", fleetA1+"/24")
	lab.attach(r1, "eth0", "A", fleetRelay1+"/24")
	lab.attach(r1, "eth1", "B", "10.214.2.3/24")
	lab.attach(r2, "eth0", "A", fleetRelay2+"/24")
	lab.attach(r2, "eth1", "B", "10.214.2.4/24")
	lab.attach(r2, "eth2", "C", "10.214.3.4/24")
	lab.attach(b1, "eth0", "B", fleetB1+"/24")
	lab.attach(c1, "eth0", "C", fleetC1+"/24")
	lab.attach(client, "eth0", "A", fleetClient+"/24")

	key := writeKey(t, "a shared secret of the fleet")
	hosts := map[string]*instance{}
	for addr, ns := range map[string]string{fleetA1: a1, fleetRelay1: r1, fleetRelay2: r2, fleetB1: b1, fleetC1: c1} {
		hosts[addr] = startMetadIn(t, ns, runOpts{conf: "web daemon /bin/sleep 1000\n", args: []string{"-k", key}})
	}
	for _, m := range hosts {
		m.waitEvent(1, "network control", msg("network control listening"))
		m.waitEvent(1, "web to start", msg("started", "web"))
	}
	metac := func(args ...string) (string, string, int) {
		t.Helper()
		return metacIn(t, client, append([]string{"-k", key, "-t", "1s"}, args...)...)
	}
	every := []string{fleetA1, fleetRelay1, fleetRelay2, fleetB1, fleetC1}
	slices.Sort(every)

	t.Run("each relay broadcasts; each host carries the request out once and is listed once", func(t *testing.T) {
		out, errOut, status := metac("-r", fleetRelay1+","+fleetRelay2, "-b", "--json", "disable", "web")
		if got := hostsOf(t, out); status != 0 || !slices.Equal(got, every) {
			t.Errorf("got status %d, hosts %v, stderr %q; want 0 and %v", status, got, errOut, every)
		}
		for addr, m := range hosts {
			if addr == fleetRelay1 || addr == fleetRelay2 {
				m.waitEvent(1, "the relay to finish", msg("relayed request"))
			}
			if n := len(m.matching(func(ev event) bool { return ev.str("message") == "control request" && ev.str("cmd") == "disable" })); n != 1 {
				t.Errorf("%s: carried disable out %d times, want once", addr, n)
			}
		}
		// Human output: the relays first, in the order given.
		out, _, status = metac("-r", fleetRelay2, "-r", fleetRelay1, "-b", "list")
		if i, j := strings.Index(out, "==> "+fleetRelay2+" "), strings.Index(out, "==> "+fleetRelay1+" "); status != 0 || strings.Count(out, "==> ") != 5 || i != 0 || j < i {
			t.Errorf("got status %d, output\n%s\nwant five hosts, relay2 then relay1 first", status, out)
		}
	})

	dir := t.TempDir()
	fleet := filepath.Join(dir, "fleet")
	text := "# the fleet\n" + strings.Join(every, "\n") + "\n" + fleetNowhere + "   # gone\n"
	if err := os.WriteFile(fleet, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("--hosts with -b: the expected hosts that did not answer", func(t *testing.T) {
		out, errOut, status := metac("-r", fleetRelay1+","+fleetRelay2, "-b", "--hosts", fleet, "--json", "version")
		var missing []string
		for _, h := range parseHosts(t, out) {
			if !h.OK {
				missing = append(missing, h.Host+": "+*h.Error)
			}
		}
		if status != 3 || len(parseHosts(t, out)) != 6 || !slices.Equal(missing, []string{fleetNowhere + ": no answer"}) {
			t.Errorf("got status %d, stdout\n%s\nstderr %q; want 3, every host, and %s without an answer", status, out, errOut, fleetNowhere)
		}
		_, errOut, status = metac("-b", "--hosts", fleet, "version")
		want := "metac: " + fleetB1 + ": no answer\nmetac: " + fleetC1 + ": no answer\nmetac: " + fleetNowhere + ": no answer\n"
		if status != 3 || errOut != want {
			t.Errorf("-b on A alone: got status %d, stderr %q; want 3 and %q", status, errOut, want)
		}
	})

	t.Run("--hosts without -b: the hosts to send to", func(t *testing.T) {
		onA := filepath.Join(dir, "on-a")
		if err := os.WriteFile(onA, []byte(fleetA1+"\n"+fleetRelay2+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, errOut, status := metac("--hosts", onA, "--json", "enable", "web")
		if got, want := hostsOf(t, out), []string{fleetA1, fleetRelay2}; status != 0 || !slices.Equal(got, want) {
			t.Errorf("got status %d, hosts %v, stderr %q; want 0 and %v", status, got, errOut, want)
		}
		_, errOut, status = metac("--hosts", filepath.Join(dir, "absent"), "list")
		if status != 2 || !strings.Contains(errOut, "cannot read hosts file") {
			t.Errorf("an absent file: got status %d, stderr %q; want 2 and cannot read hosts file", status, errOut)
		}
	})
}
