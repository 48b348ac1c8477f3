package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The fleet step (issue 16): how long until every reply of N hosts is
// whole, `metac -b` against the way admins do it today, `ssh HOST metac
// list` in a loop, one host after the other and 16 at a time (xargs -P).
// The hosts are network namespaces on one bridge, each running metad with
// fleetServices services and sshd; this step, unlike the others, uses
// network namespaces of its own rather than the loopback.
var fleetSizes = []int{50, 100, 200, 400}

const (
	fleetServices = 40
	fleetParallel = 16
	fleetNSPrefix = "metad-bench-fleet-"
	fleetClient   = "10.217.0.100"
	fleetMACBase  = "02:fd"
	fleetWait     = 60 * time.Second // for a fleet to be up
)

// fleetRow is the result of one fleet size: seconds per whole gathering.
type fleetRow struct {
	hosts            int
	metac, seq, par  []float64
	metacErr, sshErr error
}

// fleetLab is the network of the fleet step: a switch namespace with a
// bridge, a client, and the hosts.
type fleetLab struct {
	b      *bench
	prefix string
	nss    []string // every namespace made, the switch first
	client string
	hosts  []string // namespaces of the hosts, in order
	dir    string
}

func fleetAddr(i int) string { return fmt.Sprintf("10.217.%d.%d", 1+i/250, 1+i%250) }
func fleetMAC(i int) string {
	return fmt.Sprintf("%s:00:00:%02x:%02x", fleetMACBase, (i+1)>>8, (i+1)&0xff)
}

// ipBatch runs ip -batch with lines, in namespace ns unless "".
func ipBatch(ns string, lines []string) error {
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// removeFleetNamespaces removes the namespaces of the fleet step, this
// run's and any an interrupted run left.
func removeFleetNamespaces() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var del []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], fleetNSPrefix) {
			del = append(del, "netns del "+f[0])
		}
	}
	if len(del) > 0 {
		cmd := exec.Command("ip", "-force", "-batch", "-")
		cmd.Stdin = strings.NewReader(strings.Join(del, "\n") + "\n")
		cmd.Run()
	}
}

// newFleetLab makes n hosts and a client on one bridge, with static
// neighbour entries between the client and the hosts (one software
// bridge cannot carry the ARP storm of a whole subnet at once).
func newFleetLab(b *bench, n int) (*fleetLab, error) {
	var r [3]byte
	rand.Read(r[:])
	l := &fleetLab{b: b, prefix: fleetNSPrefix + hex.EncodeToString(r[:]) + "-", dir: filepath.Join(b.dir, "fleet")}
	if err := os.MkdirAll(filepath.Join(l.dir, "sock"), 0o755); err != nil {
		return nil, err
	}
	sw := l.prefix + "sw"
	l.client = l.prefix + "client"
	add := []string{"netns add " + sw, "netns add " + l.client}
	for i := range n {
		l.hosts = append(l.hosts, l.prefix+"h"+strconv.Itoa(i))
		add = append(add, "netns add "+l.hosts[i])
	}
	l.nss = append([]string{sw, l.client}, l.hosts...)
	if err := ipBatch("", add); err != nil {
		return nil, err
	}
	swLines := []string{"link add br0 type bridge", "link set br0 up",
		"link add c-br0 type veth peer name eth0 address " + fleetMACBase + ":01:00:00:64 netns " + l.client, "link set c-br0 master br0 up"}
	client := []string{"link set lo up", "addr add " + fleetClient + "/16 brd + dev eth0", "link set eth0 up"}
	for i, ns := range l.hosts {
		port := "h" + strconv.Itoa(i) + "-br0"
		swLines = append(swLines, "link add "+port+" type veth peer name eth0 address "+fleetMAC(i)+" netns "+ns, "link set "+port+" master br0 up")
		client = append(client, "neigh replace "+fleetAddr(i)+" lladdr "+fleetMAC(i)+" dev eth0 nud permanent")
	}
	if err := ipBatch(sw, swLines); err != nil {
		return nil, err
	}
	if err := ipBatch(l.client, client); err != nil {
		return nil, err
	}
	for i, ns := range l.hosts {
		if err := ipBatch(ns, []string{"link set lo up", "addr add " + fleetAddr(i) + "/16 brd + dev eth0", "link set eth0 up",
			"neigh replace " + fleetClient + " lladdr " + fleetMACBase + ":01:00:00:64 dev eth0 nud permanent"}); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// inClient returns the command that runs argv in the client's namespace.
func (l *fleetLab) inClient(argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.client}, argv...)...)
}

// timed runs cmd and returns how long it took, in seconds, and its
// output.
func timed(cmd *exec.Cmd) (float64, string, error) {
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start).Seconds()
	if err != nil {
		return took, out.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(lastLines(errOut.String(), 3)))
	}
	return took, out.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// benchFleet measures each fleet size.
func (b *bench) benchFleet() error {
	sshd, err := lookPath("sshd")
	if err != nil {
		return errors.New("needs sshd (openssh-server) for the ssh loop")
	}
	sizes := fleetSizes
	removeFleetNamespaces()
	defer removeFleetNamespaces()
	l, err := newFleetLab(b, sizes[len(sizes)-1])
	if err != nil {
		return err
	}
	if err := l.setupSSH(); err != nil {
		return err
	}
	for _, n := range sizes {
		b.logf("   %d hosts", n)
		row := l.measure(sshd, n)
		b.res.fleet = append(b.res.fleet, row)
		b.killAll()
	}
	return nil
}

// setupSSH writes the keys and sshd's config: root logs in with the
// bench's key only.
func (l *fleetLab) setupSSH() error {
	for _, k := range []string{"host_key", "client_key"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(l.dir, k)).CombinedOutput(); err != nil {
			return fmt.Errorf("cannot make an ssh key: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(l.dir, "client_key.pub"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.dir, "authorized_keys"), pub, 0o600); err != nil {
		return err
	}
	conf := strings.Join([]string{
		"Port 22",
		"HostKey " + filepath.Join(l.dir, "host_key"),
		"AuthorizedKeysFile " + filepath.Join(l.dir, "authorized_keys"),
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"PidFile none",
		"LogLevel ERROR",
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(l.dir, "sshd_config"), []byte(conf), 0o600); err != nil {
		return err
	}
	// sshd's privilege separation directory, which Debian makes at boot.
	return os.MkdirAll("/run/sshd", 0o755)
}

// measure starts metad and sshd on the first n hosts, waits until every
// one answers both ways, and times the gatherings, alternating them.
func (l *fleetLab) measure(sshd string, n int) fleetRow {
	b := l.b
	row := fleetRow{hosts: n}
	var conf strings.Builder
	for i := range fleetServices {
		fmt.Fprintf(&conf, "service-%02d daemon disabled /bin/sleep 1000\n", i)
	}
	confPath, keyPath := filepath.Join(l.dir, "metad.conf"), filepath.Join(l.dir, "metad.key")
	os.WriteFile(confPath, []byte(conf.String()), 0o644)
	os.WriteFile(keyPath, []byte("the key of the fleet bench\n"), 0o600)
	addrs := make([]string, n)
	for i := range n {
		addrs[i] = fleetAddr(i)
	}
	hostsFile := filepath.Join(l.dir, "hosts-"+strconv.Itoa(n))
	os.WriteFile(hostsFile, []byte(strings.Join(addrs, "\n")+"\n"), 0o644)
	for i := range n {
		ns, a := l.hosts[i], addrs[i]
		sock := filepath.Join(l.dir, "sock", a+".sock")
		if _, err := b.start("fleet-metad-"+a, []string{"ip", "netns", "exec", ns, b.metad, "-f", confPath, "-k", keyPath, "-s", sock, "--log-level", "warn"}, nil); err != nil {
			row.metacErr = err
			return row
		}
		if _, err := b.start("fleet-sshd-"+a, []string{"ip", "netns", "exec", ns, sshd, "-D", "-e", "-f", filepath.Join(l.dir, "sshd_config"), "-o", "ListenAddress=" + a}, nil); err != nil {
			row.sshErr = err
			return row
		}
	}
	metac := func() (float64, error) {
		took, out, err := timed(l.inClient(b.metac, "-k", keyPath, "-b", "--hosts", hostsFile, "-t", "20s", "--json", "list"))
		if err == nil && strings.Count(out, `"ok":true`) < n {
			err = fmt.Errorf("%d of %d hosts answered", strings.Count(out, `"ok":true`), n)
		}
		return took, err
	}
	sshOpts := "-i " + filepath.Join(l.dir, "client_key") + " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=20"
	remote := b.metac + " -s " + filepath.Join(l.dir, "sock") + "/{}.sock list"
	seq := func() (float64, error) {
		script := "while read a; do ssh " + sshOpts + " root@$a " + strings.ReplaceAll(remote, "{}", "$a") + " </dev/null >/dev/null || exit 1; done < " + hostsFile
		took, _, err := timed(l.inClient("sh", "-c", script))
		return took, err
	}
	par := func() (float64, error) {
		script := "xargs -P " + strconv.Itoa(fleetParallel) + " -I{} ssh " + sshOpts + " root@{} " + remote + " < " + hostsFile + " >/dev/null"
		took, _, err := timed(l.inClient("sh", "-c", script))
		return took, err
	}
	// Up: every metad answers, and every sshd lets the client in.
	deadline := time.Now().Add(fleetWait)
	for {
		_, err := metac()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			row.metacErr = fmt.Errorf("the fleet is not up after %v: %v", fleetWait, err)
			return row
		}
	}
	for {
		_, err := par()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			row.sshErr = fmt.Errorf("ssh to the fleet does not work after %v: %v", fleetWait, err)
			return row
		}
	}
	// metac takes a fraction of a second, ssh minutes: metac runs every
	// round, each ssh way once, between two rounds of metac.
	ways := []string{"metac", "seq", "metac", "par"}
	for r := range max(b.rounds, 2) {
		for _, w := range rotate(ways, r) {
			if w != "metac" && r > 0 {
				continue
			}
			switch w {
			case "metac":
				took, err := metac()
				if err != nil {
					row.metacErr = err
					continue
				}
				row.metac = append(row.metac, took)
			case "seq":
				took, err := seq()
				if err != nil {
					row.sshErr = err
					continue
				}
				row.seq = append(row.seq, took)
			case "par":
				took, err := par()
				if err != nil {
					row.sshErr = err
					continue
				}
				row.par = append(row.par, took)
			}
		}
	}
	b.logf("   %d hosts: metac -b %.2fs, ssh one by one %.2fs, ssh %d at a time %.2fs",
		n, median(row.metac), median(row.seq), fleetParallel, median(row.par))
	return row
}

// fleetMarkdown is the report's section of the fleet step.
func (b *bench) fleetMarkdown() string {
	r := &b.res
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format+"\n", args...) }
	p("## Fleet: every reply of N hosts")
	p("")
	if len(r.fleet) == 0 {
		p("Not measured: see the problems below.")
		p("")
		return w.String()
	}
	p("N hosts, each a network namespace on one bridge running metad with %d services and sshd.", fleetServices)
	p("Time until every host's `list` is whole: `metac -b --hosts FILE --json list` (it ends once every")
	p("host of the file has answered, asking again for what is lost), against `ssh HOST metac list` for")
	p("every host, one after the other and %d at a time (`xargs -P %d`), with an ed25519 key. Seconds:", fleetParallel, fleetParallel)
	p("the median of the rounds for metac (it takes a fraction of a second), one run of each ssh way")
	p("(they take minutes). Here the ratio is **ssh ÷ metac**: how many times faster metac is.")
	p("")
	p("| hosts | metac -b | ssh one by one | ssh %d at a time | one by one ÷ metac | %d at a time ÷ metac |", fleetParallel, fleetParallel)
	p("|---|---|---|---|---|---|")
	for _, row := range r.fleet {
		m, s, q := median(row.metac), median(row.seq), median(row.par)
		mc, sc, pc := num(m, "%.2f"), num(s, "%.2f"), num(q, "%.2f")
		if row.metacErr != nil && len(row.metac) == 0 {
			mc = fmt.Sprintf("**not measured**: `%v`", row.metacErr)
		}
		if row.sshErr != nil && len(row.seq) == 0 {
			sc = fmt.Sprintf("**not measured**: `%v`", row.sshErr)
		}
		p("| %d | %s | %s | %s | %s | %s |", row.hosts, mc, sc, pc, times(ratio(s, m)), times(ratio(q, m)))
	}
	p("")
	return w.String()
}

// times formats how many times more a ratio is, rounded for large ones.
func times(r float64) string {
	if r >= 10 {
		return fmt.Sprintf("%.0f×", r)
	}
	return x(r)
}
