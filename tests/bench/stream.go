package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// concurrencies are the numbers of clients of the stream benchmark.
var concurrencies = []int{1, 8, 64}

// ceilingName is the spawn ceiling's row among the stream servers.
const ceilingName = "spawn ceiling"

// streamProgram is a per-connection program all servers run.
type streamProgram struct {
	key  string   // names its chart
	name string   // for the report
	argv []string // absolute program, then arguments
	note string
}

// streamPrograms returns the two per-connection programs: a common small
// static program (busybox-static's cat, the setting: its spawn
// ceiling is a few hundred per second) and the 172-byte tiny program,
// with which the servers' own overhead weighs most.
func (b *bench) streamPrograms() []streamProgram {
	var progs []streamProgram
	if bb, err := lookPath("busybox"); err == nil && linking(bb) == "static" {
		progs = append(progs, streamProgram{key: "static", name: "busybox-static cat", argv: []string{bb, "cat"},
			note: "a common static program (" + bb + ", static): it echoes the request until end of file"})
	} else {
		b.note("stream: no static busybox (package busybox-static): the common-program table is missing")
	}
	progs = append(progs, streamProgram{key: "tiny", name: "172-byte program", argv: []string{b.tiny},
		note: "172 bytes of x86-64 written by the bench: read, write, exit"})
	return progs
}

// streamServer is one inetd-like server of the benchmark.
type streamServer struct {
	name string
	port int
	argv []string
	subj *subject
}

// referenceName is the row of the minimal Go server (streamLoop).
const referenceName = "minimal Go loop"

// compareName is the metad of -compare, measured beside metad.
const compareName = "metad -compare"

// streamServerNames are the servers of the stream tables, in order.
var streamServerNames = []string{"metad", "tcpserver", "xinetd", referenceName}

// streamServersIn writes, in dir, the configs of metad, tcpserver and
// xinetd serving prog, each on its own loopback port with no limit the
// benchmark could reach (256 connections at once, no rate limit, no DNS
// or ident lookups, no logging per connection), and adds the minimal Go
// loop of the bench as a reference.
func (b *bench) streamServersIn(dir string, prog []string) ([]*streamServer, error) {
	ports := make([]int, 5)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	conf := filepath.Join(dir, "metad.conf")
	line := fmt.Sprintf("bench stream port=%d addr=127.0.0.1 max=256 backlog=256 %s\n", ports[0], words(prog))
	if err := os.WriteFile(conf, []byte(line), 0o644); err != nil {
		return nil, err
	}
	progs, err := lookPaths("tcpserver", "xinetd")
	if err != nil {
		return nil, err
	}
	tcpserver, xinetd := progs[0], progs[1]
	xconf := filepath.Join(dir, "xinetd.conf")
	serverArgs := ""
	if len(prog) > 1 {
		serverArgs = "\n\tserver_args = " + strings.Join(prog[1:], " ")
	}
	x := fmt.Sprintf(`defaults
{
	log_type       = FILE %[1]s/xinetd.log
	log_on_success =
	log_on_failure =
	instances      = UNLIMITED
	per_source     = UNLIMITED
	cps            = 1000000 1
}

service bench
{
	type        = UNLISTED
	socket_type = stream
	protocol    = tcp
	wait        = no
	user        = root
	bind        = 127.0.0.1
	port        = %[2]d
	server      = %[3]s
	flags       = REUSE%[4]s
}
`, dir, ports[2], prog[0], serverArgs)
	if err := os.WriteFile(xconf, []byte(x), 0o644); err != nil {
		return nil, err
	}
	servers := []*streamServer{
		{name: "metad", port: ports[0], argv: []string{b.metad, "-f", conf, "-s", filepath.Join(dir, "metad.sock")}},
		{name: "tcpserver", port: ports[1], argv: append([]string{tcpserver, "-RHl0", "-c", "256", "-b", "256", "127.0.0.1", strconv.Itoa(ports[1])}, prog...)},
		{name: "xinetd", port: ports[2], argv: []string{xinetd, "-dontfork", "-f", xconf, "-pidfile", filepath.Join(dir, "xinetd.pid")}},
		{name: referenceName, port: ports[3], argv: append([]string{b.self, helperFlag, "stream-loop", strconv.Itoa(ports[3])}, prog...)},
	}
	if b.compare != "" {
		cconf := filepath.Join(dir, "compare.conf")
		line := fmt.Sprintf("bench stream port=%d addr=127.0.0.1 max=256 backlog=256 %s\n", ports[4], words(prog))
		if err := os.WriteFile(cconf, []byte(line), 0o644); err != nil {
			return nil, err
		}
		servers = append(servers, &streamServer{name: compareName, port: ports[4], argv: []string{b.compare, "-f", cconf, "-s", filepath.Join(dir, "compare.sock")}})
	}
	return servers, nil
}

// benchStream measures, for each program, the spawn ceiling and the
// servers, alternating them cell by cell.
func (b *bench) benchStream() error {
	b.res.stream = make(map[string]*streamResult)
	for _, prog := range b.streamPrograms() {
		res := &streamResult{prog: prog, cells: make(map[string]map[int]*streamCell)}
		b.res.stream[prog.key] = res
		b.res.programs = append(b.res.programs, prog.key)
		b.logf("   program: %s", prog.name)
		if err := b.streamFor(prog, res); err != nil {
			b.note("stream, %s: %v", prog.name, err)
		}
		b.killAll()
	}
	return nil
}

func (b *bench) streamFor(prog streamProgram, res *streamResult) error {
	dir := filepath.Join(b.dir, "stream-"+prog.key)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	servers, err := b.streamServersIn(dir, prog.argv)
	if err != nil {
		return err
	}
	for _, s := range servers {
		if s.subj, err = b.start("stream-"+prog.key+"-"+s.name, s.argv, os.Environ()); err != nil {
			return err
		}
		defer s.subj.stop()
	}
	var ready []*streamServer
	for _, s := range servers {
		if err := awaitStream(s.port, 10*time.Second); err != nil {
			b.note("stream, %s: %s does not serve: %v; log: %s", prog.name, s.name, err, s.subj.tail())
			continue
		}
		ready = append(ready, s)
	}
	cell := func(name string, c int) *streamCell {
		if res.cells[name] == nil {
			res.cells[name] = make(map[int]*streamCell)
		}
		if res.cells[name][c] == nil {
			res.cells[name][c] = &streamCell{}
		}
		return res.cells[name][c]
	}
	// The ceiling is one more subject of the alternation.
	subjects := append([]*streamServer{{name: ceilingName}}, ready...)
	for r := range b.rounds {
		for ci, c := range concurrencies {
			for _, s := range rotate(subjects, r+ci) {
				if s.name == ceilingName {
					n, d := spawnLoop(prog.argv, 1, b.cell)
					res.ceiling = append(res.ceiling, float64(n)/d.Seconds())
					b.logf("   round %d c=%-2d %-15s %6.0f spawns/s", r+1, c, s.name, float64(n)/d.Seconds())
					continue
				}
				lr := load(s.port, c, b.cell)
				cell(s.name, c).add(lr)
				b.logf("   round %d c=%-2d %-15s %6.0f conn/s  p50 %6.2f ms  p99 %6.2f ms  errors %d", r+1, c, s.name, lr.rate(), ms(lr.pct(50)), ms(lr.pct(99)), lr.errs)
				if lr.firstErr != nil {
					b.logf("      first error: %v", lr.firstErr)
				}
			}
		}
		// The machine's whole capacity: one spawn loop per CPU.
		n, d := spawnLoop(prog.argv, runtime.NumCPU(), b.cell)
		res.ceilingPar = append(res.ceilingPar, float64(n)/d.Seconds())
	}
	return nil
}

// streamResult is the stream benchmark of one program.
type streamResult struct {
	prog                streamProgram
	ceiling, ceilingPar []float64                      // spawns/s per measurement
	cells               map[string]map[int]*streamCell // server, clients
}

// rate is the median conn/s of server at concurrency c.
func (r *streamResult) rate(server string, c int) float64 {
	if r == nil {
		return 0
	}
	if cell := r.cells[server][c]; cell != nil {
		return median(cell.rates)
	}
	return 0
}

// streamCell is one server at one concurrency, over the rounds.
type streamCell struct {
	rates, p50, p99 []float64 // per round; latencies in ms
	errs, conns     int
	firstErr        error
}

func (c *streamCell) add(r loadResult) {
	c.rates = append(c.rates, r.rate())
	c.p50 = append(c.p50, ms(r.pct(50)))
	c.p99 = append(c.p99, ms(r.pct(99)))
	c.errs += r.errs
	c.conns += len(r.lat)
	if c.firstErr == nil {
		c.firstErr = r.firstErr
	}
}

// loadResult is one run of the load generator.
type loadResult struct {
	lat      []time.Duration // of each verified connection
	errs     int
	firstErr error
	elapsed  time.Duration
}

func (r loadResult) rate() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

func (r loadResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	s := slices.Clone(r.lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}

// load runs conc clients against 127.0.0.1:port for d. Each client
// connects, sends a request line of its own, reads to end of file and
// checks that the reply is its request (the tiny program echoes it), then
// does it again. A connection counts when its reply checked; the rate is
// over the time until the last client finished.
func load(port, conc int, d time.Duration) loadResult {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	start := time.Now()
	deadline := start.Add(d)
	results := make([]loadResult, conc)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[w]
			r.lat = make([]time.Duration, 0, 1024)
			req := make([]byte, 0, 32)
			buf := make([]byte, 256)
			for seq := 0; time.Now().Before(deadline); seq++ {
				req = fmt.Appendf(req[:0], "c%d-%d\n", w, seq)
				t := time.Now()
				if err := exchange(addr, req, buf); err != nil {
					r.errs++
					if r.firstErr == nil {
						r.firstErr = err
					}
					if r.errs > 100 && r.errs > len(r.lat) {
						return // the server is down: do not spin
					}
					continue
				}
				r.lat = append(r.lat, time.Since(t))
			}
		}()
	}
	wg.Wait()
	all := loadResult{elapsed: time.Since(start)}
	for _, r := range results {
		all.lat = append(all.lat, r.lat...)
		all.errs += r.errs
		if all.firstErr == nil {
			all.firstErr = r.firstErr
		}
	}
	return all
}

// exchange makes one connection and checks its reply.
func exchange(addr string, req, buf []byte) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(req); err != nil {
		return err
	}
	// End of the request: a program that reads to end of file (cat)
	// replies and exits; the tiny program has read its line already.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	n := 0
	for {
		k, err := c.Read(buf[n:])
		n += k
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if n == len(buf) {
			return fmt.Errorf("reply too long: %q", buf[:n])
		}
	}
	if !bytes.Equal(buf[:n], req) {
		return fmt.Errorf("got reply %q, want %q", buf[:n], req)
	}
	return nil
}

// awaitStream waits until a server on port answers one checked request.
func awaitStream(port int, patience time.Duration) error {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(patience)
	buf := make([]byte, 256)
	for {
		err := exchange(addr, []byte("ready\n"), buf)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// spawnLoop is the spawn ceiling: par loops, each starting argv (with
// /dev/null as stdin, so that it ends at once) and waiting for it, for d. It uses what metad uses,
// syscall.ForkExec (vfork+exec) and wait4, with the attributes metad
// gives a stream instance (new session, three descriptors, the
// environment). It returns the spawns and the time they took.
func spawnLoop(argv []string, par int, d time.Duration) (int, time.Duration) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0, d
	}
	defer null.Close()
	attr := &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{null.Fd(), null.Fd(), null.Fd()},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	}
	start := time.Now()
	deadline := start.Add(d)
	counts := make([]int, par)
	var wg sync.WaitGroup
	for i := range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				pid, err := syscall.ForkExec(argv[0], argv, attr)
				if err != nil {
					return
				}
				var ws syscall.WaitStatus
				for {
					if _, err := syscall.Wait4(pid, &ws, 0, nil); !errors.Is(err, syscall.EINTR) {
						break
					}
				}
				counts[i]++
			}
		}()
	}
	wg.Wait()
	n := 0
	for _, c := range counts {
		n += c
	}
	return n, time.Since(start)
}

// freePort returns a TCP port of the loopback that is free now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freeUDPPort returns a UDP port of the loopback that is free now.
func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// lookPath finds a program in PATH or in the sbin directories, which a
// user's PATH may lack.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/libexec/podman"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("cannot find %s (make bench installs it from Debian)", name)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// words splits a command line for the report.
func words(argv []string) string { return strings.Join(argv, " ") }
