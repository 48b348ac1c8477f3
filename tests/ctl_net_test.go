package tests

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netLab is a small network of namespaces made for one test: a "switch"
// namespace holding the bridges, and hosts attached to them by veth
// pairs. Nothing in it is connected to the machine's own network, so no
// test traffic leaves it.
type netLab struct {
	t      *testing.T
	prefix string // of every namespace name, unique to the test run
	sw     string // the switch namespace
}

// newNetLab makes an empty lab, removed when the test ends.
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	requireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("needs ip (iproute2) for network namespaces: apt-get install iproute2")
	}
	var r [3]byte
	rand.Read(r[:])
	l := &netLab{t: t, prefix: "metad-" + hex.EncodeToString(r[:]) + "-"}
	l.sw = l.addNS("sw")
	return l
}

// ip runs ip with args, failing the test on error.
func (l *netLab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// addNS makes a namespace with its loopback up and returns its name.
func (l *netLab) addNS(name string) string {
	l.t.Helper()
	ns := l.prefix + name
	l.ip("netns", "add", ns)
	l.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			l.t.Errorf("cannot remove namespace %s: %v: %s", ns, err, out)
		}
	})
	l.ip("-n", ns, "link", "set", "lo", "up")
	return ns
}

// addBridge makes a bridge, a subnet, in the switch namespace.
func (l *netLab) addBridge(name string) {
	l.t.Helper()
	l.ip("-n", l.sw, "link", "add", name, "type", "bridge")
	l.ip("-n", l.sw, "link", "set", name, "up")
}

// attach connects namespace ns to bridge br as interface ifname with
// address cidr.
func (l *netLab) attach(ns, ifname, br, cidr string) {
	l.t.Helper()
	port := strings.TrimPrefix(ns, l.prefix) + "-" + br
	l.ip("-n", l.sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns)
	l.ip("-n", l.sw, "link", "set", port, "master", br, "up")
	l.ip("-n", ns, "addr", "add", cidr, "brd", "+", "dev", ifname)
	l.ip("-n", ns, "link", "set", ifname, "up")
}

// inNS runs f on a thread in namespace ns: sockets f opens belong to it.
// The thread is never used again, so nothing else runs in ns by mistake.
func inNS(t *testing.T, ns string, f func()) {
	t.Helper()
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread ends with this goroutine
		fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		if err == nil {
			f()
		}
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatalf("cannot enter namespace %s: %v", ns, err)
	}
}

// startMetadIn starts metad in namespace ns. It hands startMetad a
// wrapper in place of the binary; ip netns exec execs metad, so the
// process startMetad watches is metad itself.
func startMetadIn(t *testing.T, ns string, o runOpts) *instance {
	t.Helper()
	wrapper := filepath.Join(t.TempDir(), "metad-in-netns")
	script := "#!/bin/sh\nexec ip netns exec " + ns + " " + metadBin + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	real := metadBin
	metadBin = wrapper
	defer func() { metadBin = real }()
	return startMetad(t, o)
}

// metacIn runs metac in namespace ns.
func metacIn(t *testing.T, ns string, args ...string) (string, string, int) {
	t.Helper()
	return runBin(t, "ip", append([]string{"netns", "exec", ns, metacBin}, args...)...)
}

// writeKey writes a key file of mode 0600 and returns its path.
func writeKey(t *testing.T, key string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "metad.key")
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// hostsOf returns the hosts of metac --json output, and fails the test
// when one is not ok or is there twice.
func hostsOf(t *testing.T, out string) []string {
	t.Helper()
	var hosts []string
	for _, h := range parseHosts(t, out) {
		if !h.OK || slices.Contains(hosts, h.Host) {
			t.Errorf("got %+v, want every host ok and once:\n%s", h, out)
		}
		hosts = append(hosts, h.Host)
	}
	slices.Sort(hosts)
	return hosts
}

// Addresses of the lab: subnet A is 10.213.1.0/24, subnet B 10.213.2.0/24.
const (
	addrA1     = "10.213.1.2"   // host a1, on A
	addrRelayA = "10.213.1.3"   // host relay, on A and B
	addrRelayB = "10.213.2.3"   //
	addrB1     = "10.213.2.2"   // host b1, on B
	addrClient = "10.213.1.100" // where metac runs, on A; no metad
)

// manyServices is how many services b1 has besides web: a list of them
// takes over a hundred datagrams.
const manyServices = 1000

func TestCtlNetwork(t *testing.T) {
	lab := newNetLab(t)
	lab.addBridge("A")
	lab.addBridge("B")
	a1, relay, b1, client := lab.addNS("a1"), lab.addNS("relay"), lab.addNS("b1"), lab.addNS("client")
	lab.attach(a1, "eth0", "A", addrA1+"/24")
	lab.attach(relay, "eth0", "A", addrRelayA+"/24")
	lab.attach(relay, "eth1", "B", addrRelayB+"/24")
	lab.attach(b1, "eth0", "B", addrB1+"/24")
	lab.attach(client, "eth0", "A", addrClient+"/24")
	// The relay routes between A and B, for requests to named hosts.
	lab.ip("-n", client, "route", "add", "10.213.2.0/24", "via", addrRelayA)
	lab.ip("-n", b1, "route", "add", "10.213.1.0/24", "via", addrRelayB)
	if out, err := exec.Command("ip", "netns", "exec", relay, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward").CombinedOutput(); err != nil {
		t.Fatalf("cannot make the relay a router: %v: %s", err, out)
	}

	key := writeKey(t, "a shared secret of the test network")
	wrongKey := writeKey(t, "not the secret of the test network")
	conf := "web daemon /bin/sleep 1000\n"
	// b1 has many more services, so its list needs many datagrams.
	var many strings.Builder
	for i := range manyServices {
		fmt.Fprintf(&many, "service-%04d daemon disabled /bin/sleep 1000\n", i)
	}
	hosts := map[string]*instance{}
	for addr, ns := range map[string]string{addrA1: a1, addrRelayA: relay, addrB1: b1} {
		c := conf
		if addr == addrB1 {
			c += many.String()
		}
		hosts[addr] = startMetadIn(t, ns, runOpts{conf: c, args: []string{"-k", key}})
	}
	for _, m := range hosts {
		m.waitEvent(1, "network control", msg("network control listening"))
		m.waitEvent(1, "web to start", msg("started", "web"))
	}
	metac := func(args ...string) (string, string, int) {
		t.Helper()
		return metacIn(t, client, append([]string{"-k", key}, args...)...)
	}
	// enabled returns whether web is enabled on host addr, asked over
	// the network.
	enabled := func(addr string) bool {
		t.Helper()
		out, errOut, status := metac("-h", addr, "--json", "list", "web")
		h := parseHosts(t, out)
		if status != 0 || len(h) != 1 || len(h[0].Services) != 1 {
			t.Fatalf("list on %s: got status %d, %q, %q", addr, status, out, errOut)
		}
		return *h[0].Services[0].Enabled
	}

	t.Run("broadcast reaches exactly the hosts of the subnet", func(t *testing.T) {
		out, errOut, status := metac("-b", "--json", "list")
		if got, want := hostsOf(t, out), []string{addrA1, addrRelayA}; status != 0 || !slices.Equal(got, want) {
			t.Errorf("got status %d, hosts %v, stderr %q; want 0 and %v", status, got, errOut, want)
		}
		for _, h := range parseHosts(t, out) {
			if s := h.service(t, "web"); len(s.Instances) != 1 || s.Instances[0].PID == 0 {
				t.Errorf("%s: got %+v, want web with one instance", h.Host, s)
			}
		}
		// Human output: a header per host.
		out, _, status = metac("-b", "list")
		if status != 0 || strings.Count(out, "==> ") != 2 || !strings.Contains(out, "==> "+addrA1) || !strings.Contains(out, "==> "+addrRelayA) {
			t.Errorf("got status %d, output\n%s\nwant a header for each of the two hosts", status, out)
		}
	})

	t.Run("relay reaches the hosts of its subnets, each once", func(t *testing.T) {
		out, errOut, status := metac("-r", addrRelayA, "-b", "--json", "list")
		if got, want := hostsOf(t, out), []string{addrA1, addrRelayA, addrB1}; status != 0 || !slices.Equal(got, want) {
			t.Errorf("got status %d, hosts %v, stderr %q; want 0 and %v", status, got, errOut, want)
		}
		for _, h := range parseHosts(t, out) {
			if h.Host == addrB1 && len(h.Services) != manyServices+1 {
				t.Errorf("%s: got %d services through the relay, want %d", h.Host, len(h.Services), manyServices+1)
			}
		}
		hosts[addrRelayA].waitEvent(1, "the relay to finish", msg("relayed request"))
		// Each host carried the request out once: the relay as asked, the
		// others from its copy; the relay dropped its own copy.
		for addr, m := range hosts {
			relay := m.matching(func(ev event) bool { return ev.str("message") == "control request" && ev["relay"] == true })
			relayed := m.matching(func(ev event) bool { return ev.str("message") == "control request" && ev["relayed"] == true })
			want := []int{0, 1}
			if addr == addrRelayA {
				want = []int{1, 0}
			}
			if len(relay) != want[0] || len(relayed) != want[1] {
				t.Errorf("%s: got %d relay requests and %d relayed copies carried out, want %v", addr, len(relay), len(relayed), want)
			}
		}
	})

	t.Run("a named host across the router", func(t *testing.T) {
		out, errOut, status := metac("-h", addrB1, "disable", "web")
		if status != 0 || out != "" || errOut != "" {
			t.Fatalf("got status %d, %q, %q; want 0 and quiet", status, out, errOut)
		}
		out, _, _ = metac("-h", addrB1, "--json", "list")
		if h := parseHosts(t, out); len(h) != 1 || len(h[0].Services) != manyServices+1 {
			t.Errorf("got %d hosts, want one with %d services", len(h), manyServices+1)
		}
		if enabled(addrB1) || !enabled(addrA1) {
			t.Errorf("got web enabled on b1 %v, on a1 %v; want it disabled on b1 only", enabled(addrB1), enabled(addrA1))
		}
		_, errOut, status = metac("-h", addrB1+","+addrA1, "enable", "web", "nope")
		if status != 1 || errOut != "metac: "+addrB1+": unknown service \"nope\"\nmetac: "+addrA1+": unknown service \"nope\"\n" {
			t.Errorf("got status %d, stderr %q; want 1 and the error of each host, naming it and the service", status, errOut)
		}
		metac("-h", addrB1, "enable", "web")
		if !enabled(addrB1) {
			t.Errorf("got web disabled on b1 after enable, want enabled")
		}
	})

	t.Run("a wrong key gets silence and changes nothing", func(t *testing.T) {
		refusals := hosts[addrA1].count(msg("refused network control request"))
		_, errOut, status := metacIn(t, client, "-k", wrongKey, "-h", addrA1, "-t", "500ms", "disable", "web")
		if status != 3 || errOut != "metac: "+addrA1+": no answer\n" {
			t.Errorf("-h: got status %d, stderr %q; want 3 and no answer", status, errOut)
		}
		ev := hosts[addrA1].waitEvent(refusals+1, "the refusal to be logged", msg("refused network control request"))
		if ev.str("error") != "bad MAC" || !strings.HasPrefix(ev.str("from"), addrClient+":") {
			t.Errorf("got %v, want bad MAC from %s", ev, addrClient)
		}
		out, errOut, status := metacIn(t, client, "-k", wrongKey, "-b", "-t", "500ms", "stop", "web")
		if status != 3 || out != "" || !strings.Contains(errOut, "no answer to the broadcast") {
			t.Errorf("-b: got status %d, %q, %q; want 3 and no answer", status, out, errOut)
		}
		hosts[addrRelayA].waitEvent(1, "the broadcast to be refused", msg("refused network control request"))
		if !enabled(addrA1) || !enabled(addrRelayA) {
			t.Errorf("web was disabled by a request with the wrong key")
		}
	})

	t.Run("a captured request sent again is refused", func(t *testing.T) {
		// metac sends its request to a socket of the test, which keeps it.
		var conn *net.UDPConn
		inNS(t, client, func() {
			var err error
			conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(addrClient), Port: 6110})
			if err != nil {
				t.Errorf("cannot listen in the client namespace: %v", err)
			}
		})
		if conn == nil {
			t.FailNow()
		}
		defer conn.Close()
		if _, _, status := metac("-h", addrClient, "-p", "6110", "-t", "200ms", "disable", "web"); status != 3 {
			t.Fatalf("got status %d from the capture, want 3 (no answer)", status)
		}
		buf := make([]byte, 2048)
		conn.SetReadDeadline(time.Now().Add(waitLimit))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("captured nothing: %v", err)
		}
		captured := bytes.Clone(buf[:n])
		to := &net.UDPAddr{IP: net.ParseIP(addrA1), Port: 611}
		m := hosts[addrA1]

		// Sent once, it is a valid request: a1 carries it out and replies.
		if _, err := conn.WriteToUDP(captured, to); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Read(buf); err != nil {
			t.Fatalf("got no reply to the first copy: %v", err)
		}
		if enabled(addrA1) {
			t.Fatalf("got web enabled on a1, want the captured disable carried out")
		}
		metac("-h", addrA1, "enable", "web")

		// Sent again, it is a replay: refused, logged, no reply.
		refusals := m.count(msg("refused network control request"))
		if _, err := conn.WriteToUDP(captured, to); err != nil {
			t.Fatal(err)
		}
		ev := m.waitEvent(refusals+1, "the replay to be refused", msg("refused network control request"))
		if !strings.Contains(ev.str("error"), "replay") {
			t.Errorf("got %v, want a replay refused", ev)
		}
		conn.SetReadDeadline(time.Now())
		if n, err := conn.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("got %d bytes, %v after the replay; want no reply", n, err)
		}
		if !enabled(addrA1) {
			t.Errorf("got web disabled on a1, want the replayed disable refused")
		}
		disables := m.matching(func(ev event) bool { return ev.str("message") == "control request" && ev.str("cmd") == "disable" })
		if len(disables) != 1 {
			t.Errorf("got %d disables carried out on a1, want 1", len(disables))
		}
	})
}

func TestCtlNetworkOffWithoutAGoodKey(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.key")
	if err := os.WriteFile(open, []byte("a secret anyone on the machine may read\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	short := writeKey(t, "too short")
	tests := []struct {
		name, key, message, want string
	}{
		{"no key file", filepath.Join(dir, "absent.key"), "no key file: network control is off", ""},
		{"a key others may read", open, "network control is off", "group or others may access it (mode 0644)"},
		{"a key too short", short, "network control is off", "a key must have 16 to 4096 bytes"},
	}
	for _, tt := range tests {
		m := startMetad(t, runOpts{conf: "web daemon /bin/sleep 1000\n", args: []string{"-k", tt.key, "-p", "6111"}})
		ev := m.waitEvent(1, tt.name, msg(tt.message))
		if !strings.Contains(ev.str("error"), tt.want) {
			t.Errorf("%s: got %v, want the reason %q", tt.name, ev, tt.want)
		}
		// The local socket serves all the same.
		if _, errOut, status := ctlOf(m).run("version"); status != 0 {
			t.Errorf("%s: got status %d, %q from the local socket, want 0", tt.name, status, errOut)
		}
		if n := m.count(msg("network control listening")); n != 0 {
			t.Errorf("%s: got network control listening, want it off", tt.name)
		}
	}
}
