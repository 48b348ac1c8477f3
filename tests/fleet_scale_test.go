package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The fleet of TestFleet: METAD_FLEET_HOSTS hosts on one subnet, each
// with METAD_FLEET_SERVICES services besides web, answering
// METAD_FLEET_ROUNDS rounds of list. make test-fleet runs 400 hosts of
// 100 services (each reply about ten datagrams); the default is small
// enough for every go test ./tests.
const (
	defaultFleetHosts    = 40
	defaultFleetServices = 20
	defaultFleetRounds   = 10
	// fleetLoss is the share of the datagrams from metad (port 611) that
	// the client's namespace drops, in percent.
	fleetLoss = 5
	// fleetRollout is how many hosts the rollout test restarts web on,
	// fleetBatch at a time; fleetBroken is the one whose web does not come
	// back, in the second to last batch.
	fleetRollout = 40
	fleetBatch   = 5
	fleetBroken  = 32
	// fleetSubnetB is how many hosts the subnet behind the relay has.
	fleetSubnetB = 5
)

// envInt returns the environment variable name as a number, or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a number, 1 or more", name, v)
	}
	return n
}

// fleetAddr is the address of host i of subnet A (10.215.0.0/16): room
// for thousands.
func fleetAddr(i int) string { return fmt.Sprintf("10.215.%d.%d", 1+i/250, 1+i%250) }

const (
	fleetClientAddr = "10.215.0.100" // where metac runs; no metad
	fleetRelayA     = "10.215.0.3"   // the relay, on A and B
	fleetRelayB     = "10.216.0.3"
)

// fleetBAddr is the address of host i of subnet B, behind the relay.
func fleetBAddr(i int) string { return fmt.Sprintf("10.216.0.%d", 10+i) }

// MAC addresses of the fleet's interfaces on A, for static neighbour
// entries; on B the kernel finds them (ARP).
func fleetMAC(i int) string  { return fmt.Sprintf("02:fe:00:00:%02x:%02x", (i+1)>>8, (i+1)&0xff) }
func fleetBMAC(i int) string { return fmt.Sprintf("02:fe:02:00:00:%02x", i+1) }

const (
	fleetClientMAC = "02:fe:01:00:00:64"
	fleetRelayMAC  = "02:fe:01:00:00:03"
)

// batchIP runs ip -batch with lines (in namespace ns unless ""), failing
// the test on error.
func batchIP(t *testing.T, ns string, lines []string) {
	t.Helper()
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// addHosts makes one namespace per name, each attached to bridge br of
// the lab's switch as eth0 with the address addr(i)/bits and the MAC
// address mac(i), in a few commands however many there are; the lines of
// neigh are run in each too. They are removed when the test ends, after
// everything started later is cleaned up.
func (l *netLab) addHosts(names []string, br string, bits int, addr, mac func(i int) string, neigh []string) []string {
	l.t.Helper()
	var add, del, sw []string
	nss := make([]string, len(names))
	for i, n := range names {
		nss[i] = l.prefix + n
		add = append(add, "netns add "+nss[i])
		del = append(del, "netns del "+nss[i])
	}
	l.t.Cleanup(func() {
		cmd := exec.Command("ip", "-force", "-batch", "-")
		cmd.Stdin = strings.NewReader(strings.Join(del, "\n") + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			l.t.Errorf("cannot remove the namespaces of %s: %v: %s", br, err, out)
		}
	})
	batchIP(l.t, "", add)
	for i, n := range names {
		port := n + "-" + br
		sw = append(sw, "link add "+port+" type veth peer name eth0 address "+mac(i)+" netns "+nss[i], "link set "+port+" master "+br+" up")
	}
	batchIP(l.t, l.sw, sw)
	for i, ns := range nss {
		batchIP(l.t, ns, append([]string{"link set lo up", fmt.Sprintf("addr add %s/%d brd + dev eth0", addr(i), bits), "link set eth0 up"}, neigh...))
	}
	return nss
}

// fleet is a lab of many metads: subnet A with the hosts and the client,
// and subnet B behind a relay.
type fleet struct {
	lab    *netLab
	client string // namespace where metac runs
	key    string
	addrs  []string    // of the hosts of A, in order
	hosts  []*instance // the metads of A, in order
	bAddrs []string    // the hosts of B, the relay first
	dir    string
}

// fleetConf is the config of a host: web, and services more that are
// disabled (they run nothing, but list reports them).
func fleetConf(services int, web string) string {
	var b strings.Builder
	b.WriteString("web daemon " + web + "\n")
	for i := range services {
		fmt.Fprintf(&b, "service-%03d daemon disabled /bin/sleep 1000\n", i)
	}
	return b.String()
}

// newFleet builds the fleet: n hosts on A with services services each
// besides web, whose command for host i is web(i).
func newFleet(t *testing.T, n, services int, web func(i int) string) *fleet {
	t.Helper()
	f := &fleet{lab: newNetLab(t), key: writeKey(t, "the key of a large fleet"), dir: t.TempDir()}
	f.lab.addBridge("A")
	f.lab.addBridge("B")
	var names []string
	for i := range n {
		names = append(names, "h"+strconv.Itoa(i))
		f.addrs = append(f.addrs, fleetAddr(i))
	}
	// Static neighbour entries between the hosts of A and the two that
	// talk to all of them: otherwise every host asks for the client's
	// (or the relay's) address by ARP at the same moment, and the
	// broadcast storm of a whole subnet on one software bridge overflows
	// the kernel's backlog (net.core.netdev_max_backlog, a setting of the
	// whole machine that this test leaves alone), which no real switch
	// does.
	toClientAndRelay := []string{
		"neigh replace " + fleetClientAddr + " lladdr " + fleetClientMAC + " dev eth0 nud permanent",
		"neigh replace " + fleetRelayA + " lladdr " + fleetRelayMAC + " dev eth0 nud permanent",
	}
	nss := f.lab.addHosts(names, "A", 16, fleetAddr, fleetMAC, toClientAndRelay)
	var toHosts []string
	for i := range n {
		toHosts = append(toHosts, "neigh replace "+fleetAddr(i)+" lladdr "+fleetMAC(i)+" dev eth0 nud permanent")
	}
	f.client = f.lab.addNS("client")
	f.lab.attach(f.client, "eth0", "A", fleetClientAddr+"/16")
	batchIP(t, f.client, append([]string{"link set eth0 address " + fleetClientMAC,
		"neigh replace " + fleetRelayA + " lladdr " + fleetRelayMAC + " dev eth0 nud permanent"}, toHosts...))
	relay := f.lab.addNS("relay")
	f.lab.attach(relay, "eth0", "A", fleetRelayA+"/16")
	f.lab.attach(relay, "eth1", "B", fleetRelayB+"/24")
	batchIP(t, relay, append([]string{"link set eth0 address " + fleetRelayMAC,
		"neigh replace " + fleetClientAddr + " lladdr " + fleetClientMAC + " dev eth0 nud permanent"}, toHosts...))
	var bNames []string
	for i := range fleetSubnetB {
		bNames = append(bNames, "b"+strconv.Itoa(i))
	}
	bNSs := f.lab.addHosts(bNames, "B", 24, fleetBAddr, fleetBMAC, nil)

	args := []string{"-k", f.key, "--log-level", "info"}
	for i, ns := range nss {
		f.hosts = append(f.hosts, startMetadIn(t, ns, runOpts{conf: fleetConf(services, web(i)), args: args}))
	}
	var others []*instance
	for i, ns := range append([]string{relay}, bNSs...) {
		others = append(others, startMetadIn(t, ns, runOpts{conf: fleetConf(services, "/bin/sleep 1000"), args: args}))
		if i == 0 {
			f.bAddrs = append(f.bAddrs, fleetRelayA)
		} else {
			f.bAddrs = append(f.bAddrs, fleetBAddr(i-1))
		}
	}
	for _, m := range append(slices.Clone(f.hosts), others...) {
		m.waitEvent(1, "network control", msg("network control listening"))
		m.waitEvent(1, "web to start", msg("started", "web"))
	}
	return f
}

// hostsFile writes the addresses as a --hosts file and returns its path.
func (f *fleet) hostsFile(name string, addrs []string) string {
	f.lab.t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path, []byte(strings.Join(addrs, "\n")+"\n"), 0o644); err != nil {
		f.lab.t.Fatal(err)
	}
	return path
}

// metac runs metac in the client's namespace with the fleet's key.
func (f *fleet) metac(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return metacIn(t, f.client, append([]string{"-k", f.key}, args...)...)
}

// dropReplies has the client's namespace drop percent of the datagrams
// from metad, at random (this kernel has no netem), and returns a
// function that reads how many it dropped.
func (f *fleet) dropReplies(t *testing.T, percent int) func() int {
	t.Helper()
	rules := fmt.Sprintf(`table inet fleetloss {
	chain input {
		type filter hook input priority 0; policy accept;
		udp sport 611 numgen random mod 100 < %d counter drop
	}
}
`, percent)
	cmd := exec.Command("ip", "netns", "exec", f.client, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	return func() int {
		out, err := exec.Command("ip", "netns", "exec", f.client, "nft", "list", "table", "inet", "fleetloss").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v: %s", err, out)
		}
		_, after, _ := strings.Cut(string(out), "packets ")
		n, _ := strconv.Atoi(strings.Fields(after + " x")[0])
		return n
	}
}

// TestFleet builds a fleet in network namespaces, loses 5% of the replies
// on the client's side, and checks that every host answers in every
// round, directly and through a relay; that a rollout goes a batch at a
// time and stops at a host whose service does not come back; and that
// an expected host that is down is named.
func TestFleet(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("needs nft to lose datagrams: apt-get install nftables")
	}
	n := envInt(t, "METAD_FLEET_HOSTS", defaultFleetHosts)
	services := envInt(t, "METAD_FLEET_SERVICES", defaultFleetServices)
	rounds := envInt(t, "METAD_FLEET_ROUNDS", defaultFleetRounds)
	if n < fleetRollout {
		t.Fatalf("METAD_FLEET_HOSTS=%d: the rollout needs %d hosts", n, fleetRollout)
	}
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken-web-started")
	start := time.Now()
	f := newFleet(t, n, services, func(i int) string {
		if i == fleetBroken {
			// Starts once; restarted, it fails for good.
			return "/bin/sh -c " + shq("[ -e "+broken+" ] && exit 1; touch "+broken+"; exec sleep 1000")
		}
		return "/bin/sleep 1000"
	})
	t.Logf("%d hosts of %d services each, and %d behind a relay, up in %v", n, services+1, len(f.bAddrs), time.Since(start).Round(time.Millisecond))
	dropped := f.dropReplies(t, fleetLoss)
	// The relay is a host of A too.
	onA := append(slices.Clone(f.addrs), fleetRelayA)
	all := f.hostsFile("all", onA)

	t.Run("every host answers in every round, directly and through the relay", func(t *testing.T) {
		every := append(slices.Clone(f.addrs), f.bAddrs...) // bAddrs has the relay
		// A relay gathers for the whole time: long enough for the
		// replies of the fleet, spread and paced.
		relayWait := time.Duration(max(1, n/100)) * time.Second
		slices.SortFunc(every, compareAddrs)
		for r := range rounds {
			begin := time.Now()
			out, errOut, status := f.metac(t, "-b", "--hosts", all, "-t", "20s", "--json", "list")
			took := time.Since(begin)
			got := parseHosts(t, out)
			var bad []string
			for _, h := range got {
				if !h.OK || len(h.Services) != services+1 {
					bad = append(bad, fmt.Sprintf("%s ok=%v services=%d error=%v", h.Host, h.OK, len(h.Services), *h.Error))
				}
			}
			if status != 0 || len(got) != len(onA) || len(bad) > 0 {
				t.Errorf("round %d: got status %d, %d hosts, %q, stderr %q; want 0 and %d hosts whole", r+1, status, len(got), bad, errOut, len(onA))
			}
			t.Logf("round %d: %d hosts whole in %v", r+1, len(got)-len(bad), took.Round(time.Millisecond))

			begin = time.Now()
			out, errOut, status = f.metac(t, "-r", fleetRelayA, "-b", "-t", relayWait.String(), "--json", "list")
			took = time.Since(begin)
			var hosts []string
			for _, h := range parseHosts(t, out) {
				if h.OK && len(h.Services) == services+1 {
					hosts = append(hosts, h.Host)
				}
			}
			slices.SortFunc(hosts, compareAddrs)
			if status != 0 || !slices.Equal(hosts, every) {
				t.Errorf("round %d through the relay: got status %d, %d hosts whole, stderr %q; want 0 and %d hosts: %v",
					r+1, status, len(hosts), errOut, len(every), diffAddrs(hosts, every))
			}
			t.Logf("round %d through the relay: %d hosts whole in %v", r+1, len(hosts), took.Round(time.Millisecond))
		}
		if d := dropped(); d == 0 {
			t.Errorf("no datagram was dropped: the test proves nothing")
		} else {
			t.Logf("%d datagrams from metad dropped on the client's side", d)
		}
	})

	t.Run("--serial: a batch at a time, and a host that does not come back stops the rollout", func(t *testing.T) {
		f.rollout(t)
	})

	t.Run("--hosts with a host down names it", func(t *testing.T) {
		down := n / 2
		f.hosts[down].signal(syscall.SIGTERM)
		f.hosts[down].wait(waitLimit)
		for _, args := range [][]string{{"-b", "-t", "10s"}, {"-t", "3s"}} {
			_, errOut, status := f.metac(t, append(args, "--hosts", all, "version")...)
			if want := "metac: " + f.addrs[down] + ": no answer\n"; status != 3 || errOut != want {
				t.Errorf("%v: got status %d, stderr %q; want 3 and %q", args, status, errOut, want)
			}
		}
	})
}

// rollout restarts web on the first fleetRollout hosts, fleetBatch at a
// time, while another metac samples how many hosts have web not ready.
func (f *fleet) rollout(t *testing.T) {
	hosts := f.addrs[:fleetRollout]
	file := f.hostsFile("rollout", hosts)
	pids := func() map[string]int {
		out, errOut, status := f.metac(t, "-b", "--hosts", file, "-t", "10s", "--json", "list", "web")
		if status != 0 {
			t.Fatalf("list web: got status %d, stderr %q", status, errOut)
		}
		m := map[string]int{}
		for _, h := range parseHosts(t, out) {
			if s := h.service(t, "web"); len(s.Instances) > 0 {
				m[h.Host] = s.Instances[0].PID
			}
		}
		return m
	}
	before := pids()

	// The sampler: how many hosts have web not ready, at most.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	most, samples := 0, 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			cmd := exec.Command("ip", "netns", "exec", f.client, metacBin, "-k", f.key, "-b", "--hosts", file, "-t", "5s", "--json", "list", "web")
			var out bytes.Buffer
			cmd.Stdout = &out
			cmd.Run()
			notReady := 0
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				var h ctlHost
				if json.Unmarshal([]byte(line), &h) != nil || !h.OK || len(h.Services) != 1 {
					continue // no answer from this host this time: not a sample of it
				}
				if s := h.Services[0]; s.State != "ready" && (s.State != "running" || len(s.Instances) == 0) {
					notReady++
				}
			}
			mu.Lock()
			most, samples = max(most, notReady), samples+1
			mu.Unlock()
		}
	}()
	out, errOut, status := f.metac(t, "--hosts", file, "--serial", strconv.Itoa(fleetBatch), "--ready-wait", "3s", "-t", "3s", "restart", "web")
	close(stop)
	wg.Wait()
	t.Logf("rollout: status %d\n%s%s", status, out, errOut)

	batch := fleetBroken / fleetBatch // the batch of the broken host, from 0
	rest := hosts[(batch+1)*fleetBatch:]
	wantStop := fmt.Sprintf("rollout stopped at batch %d of %d, on %s", batch+1, fleetRollout/fleetBatch, hosts[fleetBroken])
	wantContinue := "-h " + strings.Join(rest, ",") + " --serial 5"
	if status != 1 || !strings.Contains(errOut, wantStop) || !strings.Contains(errOut, wantContinue) {
		t.Errorf("got status %d, stderr %q; want 1, %q and the command to continue with %q", status, errOut, wantStop, wantContinue)
	}
	after := pids()
	for i, h := range hosts {
		restarted := after[h] != before[h]
		switch {
		case i == fleetBroken:
			if after[h] != 0 {
				t.Errorf("%s: got web running as %d, want it not back", h, after[h])
			}
		case i < (batch+1)*fleetBatch && !restarted:
			t.Errorf("%s: got web still %d, want it restarted", h, before[h])
		case i >= (batch+1)*fleetBatch && restarted:
			t.Errorf("%s: got web restarted (%d, was %d), want it left alone after the rollout stopped", h, after[h], before[h])
		}
	}

	// From metad's logs: when each host was asked to restart web and when
	// its new web started. No batch begins before the one before it is
	// back, so that at no time are more than fleetBatch hosts restarting.
	type span struct{ from, to time.Time }
	spans := make([]span, len(hosts))
	for i := range hosts {
		m := f.hosts[i]
		req := m.matching(func(ev event) bool { return ev.str("message") == "control request" && ev.str("cmd") == "restart" })
		if i >= (batch+1)*fleetBatch {
			if len(req) != 0 {
				t.Errorf("%s: restarted %d times, want never", hosts[i], len(req))
			}
			continue
		}
		if len(req) != 1 {
			t.Fatalf("%s: restarted %d times, want once", hosts[i], len(req))
		}
		spans[i].from = logTime(t, req[0])
		for _, ev := range m.matching(msg("started", "web")) {
			if at := logTime(t, ev); !at.Before(spans[i].from) {
				spans[i].to = at
				break
			}
		}
		if spans[i].to.IsZero() {
			spans[i].to = time.Now() // the broken one: never back
		}
	}
	for b := 1; b <= batch; b++ {
		for i := b * fleetBatch; i < (b+1)*fleetBatch; i++ {
			for j := (b - 1) * fleetBatch; j < b*fleetBatch; j++ {
				if spans[i].from.Before(spans[j].to) {
					t.Errorf("%s was asked to restart at %v, before %s, of the batch before, was back at %v",
						hosts[i], spans[i].from.Format(time.StampMilli), hosts[j], spans[j].to.Format(time.StampMilli))
				}
			}
		}
	}
	// --summary: web on every host that answered, the broken one not
	// ready.
	out, errOut, status = f.metac(t, "-b", "--hosts", file, "-t", "10s", "--summary", "list", "web")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if status != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "SERVICE ") || !strings.HasPrefix(lines[1], "web ") ||
		!strings.HasSuffix(lines[1], " "+hosts[fleetBroken]+" (backoff)") && !strings.HasSuffix(lines[1], " "+hosts[fleetBroken]+" (failed)") {
		t.Errorf("--summary: got status %d, stdout\n%s\nstderr %q; want one line for web naming %s as not ready", status, out, errOut, hosts[fleetBroken])
	}

	mu.Lock()
	defer mu.Unlock()
	t.Logf("sampled %d times: at most %d hosts had web not ready", samples, most)
	if most > fleetBatch {
		t.Errorf("got %d hosts with web not ready at once, want at most %d", most, fleetBatch)
	}
}

// logTime returns the time of a log event of metad.
func logTime(t *testing.T, ev event) time.Time {
	t.Helper()
	at, err := time.Parse("2006-01-02T15:04:05.000Z07:00", ev.str("time"))
	if err != nil {
		t.Fatalf("log event %v: bad time: %v", ev, err)
	}
	return at
}

// diffAddrs says which of want are not in got, and which of got not in
// want.
func diffAddrs(got, want []string) string {
	var missing, extra []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	return fmt.Sprintf("missing %v, not expected %v", missing, extra)
}

// compareAddrs orders IPv4 addresses numerically.
func compareAddrs(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range min(len(pa), len(pb)) {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x - y
		}
	}
	return len(pa) - len(pb)
}
