package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Stream admission (SPEC §11) through the real binary: clients connect
// from other loopback addresses (every 127/8 address is local on Linux).

// admissionStatus is what these tests read of metac --json status.
type admissionStatus struct {
	Starts  int `json:"starts"`
	Refused *struct {
		PerSource int `json:"per_source"`
		Rate      int `json:"rate"`
		OnlyFrom  int `json:"only_from"`
	} `json:"refused"`
}

// admissionOf returns the status of the service name.
func admissionOf(m *instance, name string) admissionStatus {
	m.t.Helper()
	out, errOut, status := ctlOf(m).run("--json", "status", name)
	var host struct {
		Services []admissionStatus `json:"services"`
	}
	if err := json.Unmarshal([]byte(out), &host); err != nil || status != 0 || len(host.Services) != 1 {
		m.t.Fatalf("metac --json status %s: got status %d, %v, stdout %q, stderr %q", name, status, err, out, errOut)
	}
	return host.Services[0]
}

// refusedLogged returns the refusals by rule that svc's "refused" log
// lines count so far. The lock of m must be held (inside waitCond).
func refusedLogged(m *instance, svc, rule string) int {
	n := 0
	for _, ev := range m.events {
		if ev.str("message") == "refused" && ev.str("svc") == svc && ev.str("rule") == rule {
			n += ev.int("refused")
		}
	}
	return n
}

// waitRefused waits until the log has counted want refusals of svc by
// rule (a line comes within a second of a refusal), and checks the status
// counter too when metac shows it.
func waitRefused(m *instance, svc, rule string, want int) {
	m.t.Helper()
	got := 0
	if !m.waitCond(waitLimit, func() bool { got = refusedLogged(m, svc, rule); return got >= want }) || got != want {
		m.t.Fatalf("%s: got %d refusals by %s logged, want %d", svc, got, rule, want)
	}
	if r := admissionOf(m, svc).Refused; r != nil {
		byRule := map[string]int{"per_source": r.PerSource, "rate": r.Rate, "only_from": r.OnlyFrom}
		if byRule[rule] != want {
			m.t.Errorf("%s: status counts %+v refusals, want %d by %s", svc, *r, want, rule)
		}
	}
}

// greet connects from src and reads the first line: the service's
// greeting, or "" when metad closed the connection unserved. A served
// connection is returned open.
func greet(src, addr string) (*net.TCPConn, string, error) {
	c, err := dialFrom(src, addr, waitLimit)
	if err != nil {
		return nil, "", err
	}
	c.SetDeadline(time.Now().Add(waitLimit))
	line, err := bufio.NewReader(c).ReadString('\n')
	if line == "" && (err == io.EOF || isReset(err)) {
		c.Close()
		return nil, "", nil
	}
	if err != nil {
		c.Close()
		return nil, line, err
	}
	return c, line, nil
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestAdmissionPerSource: 64 clients from 127.0.0.2 at once against
// per_source=4 get four instances and 60 closed connections, while
// 127.0.0.3 is served; then the 64 retry until each is served, and the
// instances' own record never shows more than four at once for
// 127.0.0.2.
func TestAdmissionPerSource(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(dir, "record")
	prog := filepath.Join(dir, "prog")
	script := "#!/bin/sh\n" +
		"echo \"+ $TCPREMOTEIP $$\" >> " + shq(record) + "\n" +
		"echo hello\nread x\n" +
		"echo \"- $TCPREMOTEIP $$\" >> " + shq(record) + "\n"
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	m := startMetad(t, runOpts{conf: fmt.Sprintf("ps stream port=%d addr=127.0.0.1 per_source=4 %s\n", port, prog)})
	m.waitListening("ps")

	const clients = 64
	type result struct {
		c   *net.TCPConn
		err error
	}
	results := make(chan result, clients)
	for range clients {
		go func() {
			c, line, err := greet("127.0.0.2", addr)
			if err == nil && c != nil && line != "hello\n" {
				err = fmt.Errorf("got %q, want hello", line)
			}
			results <- result{c, err}
		}()
	}
	var held []*net.TCPConn
	refused := 0
	for range clients {
		r := <-results
		switch {
		case r.err != nil:
			t.Fatalf("a client of 127.0.0.2: %v", r.err)
		case r.c != nil:
			held = append(held, r.c)
		default:
			refused++
		}
	}
	if len(held) != 4 {
		t.Errorf("64 clients from 127.0.0.2 at once: got %d served, want per_source=4", len(held))
	}
	other, line, err := greet("127.0.0.3", addr)
	if err != nil || other == nil {
		t.Fatalf("127.0.0.3 while 127.0.0.2 has its four: got %q, %v, want served", line, err)
	}
	fmt.Fprintln(other, "bye")
	other.Close()
	for _, c := range held {
		fmt.Fprintln(c, "bye")
		c.Close()
	}

	// Churn: each client retries until it is served once.
	var retried atomic.Int64
	var wg sync.WaitGroup
	failed := make(chan error, clients)
	deadline := time.Now().Add(waitLimit)
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				c, _, err := greet("127.0.0.2", addr)
				if err != nil {
					failed <- err
					return
				}
				if c == nil {
					retried.Add(1)
					continue
				}
				fmt.Fprintln(c, "bye")
				io.Copy(io.Discard, c) // the instance recorded its end
				c.Close()
				return
			}
			failed <- fmt.Errorf("not served within %v", waitLimit)
		})
	}
	wg.Wait()
	close(failed)
	for err := range failed {
		t.Fatalf("a retrying client of 127.0.0.2: %v", err)
	}

	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	live, most, starts := map[string]bool{}, 0, 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[1] != "127.0.0.2" {
			continue
		}
		if f[0] == "+" {
			live[f[2]] = true
			starts++
		} else {
			delete(live, f[2])
		}
		most = max(most, len(live))
	}
	if most > 4 || starts != 4+clients {
		t.Errorf("instances for 127.0.0.2: got at most %d at once and %d in all, want at most 4 and %d", most, starts, 4+clients)
	}
	t.Logf("127.0.0.2: at most %d instances at once; %d connections refused at once, %d while retrying", most, refused, retried.Load())
	waitRefused(m, "ps", "per_source", refused+int(retried.Load()))
}

// TestAdmissionRate: under a flood from 127.0.0.2, rate=10/1s starts no
// more than 10 + 10 per second of the flood, and refuses the rest; a
// client from 127.0.0.3 is served during the flood.
func TestAdmissionRate(t *testing.T) {
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	m := startMetad(t, runOpts{conf: fmt.Sprintf("limited stream port=%d addr=127.0.0.1 rate=10/1s /bin/echo hi\n", port)})
	m.waitListening("limited")

	const workers, enough = 8, 25 // 25 starts take at least 1.5 s at 10/s
	var served, refused atomic.Int64
	var stop atomic.Bool
	progress := make(chan struct{}, 1)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for !stop.Load() {
				c, err := dialFrom("127.0.0.2", addr, waitLimit)
				if err != nil {
					t.Errorf("cannot connect: %v", err)
					return
				}
				c.SetDeadline(time.Now().Add(waitLimit))
				b, err := io.ReadAll(c)
				c.Close()
				switch {
				case string(b) == "hi\n":
					served.Add(1)
					nudgeTest(progress)
				case len(b) == 0 && (err == nil || isReset(err)):
					refused.Add(1)
				default:
					t.Errorf("got %q, %v, want hi or nothing", b, err)
					return
				}
			}
		})
	}
	timeout := time.After(waitLimit)
	for served.Load() < enough {
		select {
		case <-progress:
		case <-timeout:
			t.Fatalf("the flood is stuck at %d served, %d refused", served.Load(), refused.Load())
		}
	}
	if c, line, err := greet("127.0.0.3", addr); err != nil || line != "hi\n" {
		t.Errorf("127.0.0.3 during the flood: got %q, %v, want hi", line, err)
	} else {
		c.Close()
	}
	midway := refused.Load()
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)

	st := admissionOf(m, "limited")
	most := 10 + int(10*elapsed.Seconds())
	if got := st.Starts - 1; got > most || int64(got) != served.Load() {
		t.Errorf("flood of %v from 127.0.0.2: got %d starts (%d served), want at most %d and one per client served",
			elapsed.Round(time.Millisecond), got, served.Load(), most)
	}
	if refused.Load() <= midway || midway == 0 {
		t.Errorf("refusals: got %d midway and %d at the end, want them to grow", midway, refused.Load())
	}
	t.Logf("%v of flood: %d starts (at most %d), %d refused", elapsed.Round(time.Millisecond), st.Starts-1, most, refused.Load())
	waitRefused(m, "limited", "rate", int(refused.Load()))
}

func nudgeTest(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// TestAdmissionOnlyFrom: only_from=127.0.0.3/32 closes the connections of
// 127.0.0.2 without starting anything, and serves 127.0.0.3.
func TestAdmissionOnlyFrom(t *testing.T) {
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	m := startMetad(t, runOpts{conf: fmt.Sprintf("only stream port=%d addr=127.0.0.1 only_from=127.0.0.3/32 /bin/echo hi\n", port)})
	m.waitListening("only")
	const tries = 20
	for i := range tries {
		c, line, err := greet("127.0.0.2", addr)
		if err != nil || c != nil {
			t.Fatalf("connection %d from 127.0.0.2: got %q, %v, want it closed unserved", i, line, err)
		}
	}
	c, line, err := greet("127.0.0.3", addr)
	if err != nil || line != "hi\n" {
		t.Fatalf("127.0.0.3: got %q, %v, want hi", line, err)
	}
	c.Close()
	waitRefused(m, "only", "only_from", tries)
	if st := admissionOf(m, "only"); st.Starts != 1 {
		t.Errorf("got %d starts, want 127.0.0.3's only", st.Starts)
	}
	if n := m.count(msg("started", "only")); n != 1 {
		t.Errorf("got %d started lines, want 127.0.0.3's only", n)
	}
}

// TestAdmissionMemoryBounded: rate= remembers a bucket for each client
// address in a table of fixed size, so metad's resident memory does not
// grow with connections from 65,536 addresses (127.1.0.0/16) past what
// the first ones took. A table that kept every address grows by several
// MiB here.
func TestAdmissionMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("65,536 connections")
	}
	prog := "/bin/true"
	if runtime.GOARCH == "amd64" {
		prog = filepath.Join(t.TempDir(), "exit")
		if err := os.WriteFile(prog, []byte(exitELF), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// Info, not debug: two log lines per connection would be most of the work.
	m := startMetad(t, runOpts{
		conf: fmt.Sprintf("many stream port=%d addr=127.0.0.1 rate=1000/1s %s\n", port, prog),
		args: []string{"--log-level", "info"},
	})
	m.waitListening("many")
	pid := m.cmd.Process.Pid

	base := netip.MustParseAddr("127.1.0.0")
	var next atomic.Int64
	// connectAll connects once from each address from next up to n, and
	// waits for each connection's end: the program ran.
	connectAll := func(n int64) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 1)
		for range 32 {
			wg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= n {
						return
					}
					a := base.As4()
					a[2], a[3] = byte(i>>8), byte(i)
					c, err := dialFrom(netip.AddrFrom4(a).String(), addr, waitLimit)
					if err == nil {
						c.SetDeadline(time.Now().Add(waitLimit))
						_, err = io.Copy(io.Discard, c)
						c.Close()
					}
					if err != nil {
						select {
						case errs <- fmt.Errorf("connection from address #%d: %w", i, err):
						default:
						}
						next.Store(n)
						return
					}
				}
			})
		}
		wg.Wait()
		next.Store(n)
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
	}

	const warm, all = 8192, 65536 // warm fills the table (4096) twice
	start := time.Now()
	connectAll(warm)
	before := vmRSS(t, pid)
	connectAll(all)
	after := vmRSS(t, pid)
	st := admissionOf(m, "many")
	if st.Starts != all {
		t.Errorf("got %d starts, want one per address, %d", st.Starts, all)
	}
	if st.Refused != nil && st.Refused.Rate != 0 {
		t.Errorf("got %d refused, want none", st.Refused.Rate)
	}
	// A map of every address to a time.Time grows by 6 MiB here; noise,
	// from the collector and the instances in flight, stays under 1.5 MiB.
	const bound = 3 << 20
	t.Logf("%d addresses in %v: VmRSS %d KiB after %d, %d KiB after %d (%+d KiB)",
		all, time.Since(start).Round(time.Millisecond), before>>10, warm, after>>10, all, (after-before)>>10)
	if after-before > bound {
		t.Errorf("VmRSS grew by %d KiB over %d more addresses, want at most %d KiB", (after-before)>>10, all-warm, bound>>10)
	}
}

// exitELF is exit_group(0) as a static x86-64 Linux executable: the
// cheapest program a connection can start, so that 65,536 of them take
// seconds, not minutes of a dynamic loader. An ELF64 header (ET_EXEC,
// EM_X86_64, entry 0x400078), one PT_LOAD program header (the whole file,
// read and execute, at 0x400000), then the code: xor edi, edi; mov eax,
// 231; syscall.
const exitELF = "" +
	"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00" +
	"\x02\x00\x3e\x00\x01\x00\x00\x00\x78\x00\x40\x00\x00\x00\x00\x00" +
	"\x40\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" +
	"\x00\x00\x00\x00\x40\x00\x38\x00\x01\x00\x00\x00\x00\x00\x00\x00" +
	"\x01\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" +
	"\x00\x00\x40\x00\x00\x00\x00\x00\x00\x00\x40\x00\x00\x00\x00\x00" +
	"\x81\x00\x00\x00\x00\x00\x00\x00\x81\x00\x00\x00\x00\x00\x00\x00" +
	"\x00\x10\x00\x00\x00\x00\x00\x00" +
	"\x31\xff\xb8\xe7\x00\x00\x00\x0f\x05"

// vmRSS returns the resident memory of process pid, in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
