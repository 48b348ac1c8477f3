package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// results is everything one run measured.
type results struct {
	machine  machine
	versions [][2]string // program, version
	took     time.Duration
	quick    bool
	notes    []string

	programs     []string // keys of stream, in order
	stream       map[string]*streamResult
	up           map[string]*upResult
	restart      map[string]*restartResult
	restartFloor []float64 // ms per spawn+wait of the exiting program
	reap         map[string][]float64
	overhead     map[string][]float64 // ms per run
	list         *listResult
	idle         []idleRow
	fleet        []fleetRow
}

// machine describes where the bench ran.
type machine struct {
	cpus                    int
	cpu, kernel, os, memory string
	load                    string
}

func machineInfo() machine {
	m := machine{cpus: runtime.NumCPU(), cpu: "?", os: "?", memory: "?", load: "?"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.kernel = unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.os = strings.Trim(v, `"`)
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(v, &kb)
				m.memory = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

// peerPackages are the Debian packages of the peers, as make bench
// installs them.
var peerPackages = [][2]string{
	{"tini", "tini"}, {"catatonit", "catatonit"}, {"dumb-init", "dumb-init"},
	{"xinetd", "xinetd"}, {"tcpserver", "ucspi-tcp"}, {"s6", "s6"},
	{"runit", "runit"}, {"supervisord", "supervisor"},
}

func peerVersions(metad string) [][2]string {
	v, _ := exec.Command(metad, "-V").Output()
	out := [][2]string{{"metad", strings.TrimSpace(string(v))}, {"Go (bench and metad)", runtime.Version()}}
	for _, p := range peerPackages {
		v, err := exec.Command("dpkg-query", "-W", "-f=${Version}", p[1]).Output()
		ver := "Debian " + p[1] + " " + strings.TrimSpace(string(v))
		if err != nil {
			ver = "not installed"
		}
		out = append(out, [2]string{p[0], ver})
	}
	return out
}

// writeReport writes the markdown report and, next to it, one chart per
// stream program: bench-stream.svg for the first, bench-stream-KEY.svg
// for the others.
func (b *bench) writeReport(out string) error {
	charts := make(map[string]string)
	for i, key := range b.res.programs {
		name := "bench-stream.svg"
		if i > 0 {
			name = "bench-stream-" + key + ".svg"
		}
		if err := os.WriteFile(filepath.Join(filepath.Dir(out), name), []byte(b.streamChart(b.res.stream[key])), 0o644); err != nil {
			return err
		}
		charts[key] = name
	}
	return os.WriteFile(out, []byte(b.markdown(charts)), 0o644)
}

// x formats a ratio.
func x(r float64) string {
	if r == 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", r)
}

// num formats a measurement, or a dash when there is none.
func num(v float64, format string) string {
	if v == 0 || math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf(format, v)
}

func ratio(a, b float64) float64 {
	if a == 0 || b == 0 {
		return 0
	}
	return a / b
}

func verdict(ok bool, measured bool) string {
	switch {
	case !measured:
		return "not measured"
	case ok:
		return "**met**"
	default:
		return "missed"
	}
}

func (r *results) upMedian(name string, f func(*upResult) []float64) float64 {
	if u := r.up[name]; u != nil {
		return median(f(u))
	}
	return 0
}

func (r *results) overheadOf(name string) float64 {
	if len(r.overhead[name]) == 0 || len(r.overhead["/bin/true"]) == 0 {
		return 0
	}
	return median(r.overhead[name]) - median(r.overhead["/bin/true"])
}

func (b *bench) markdown(charts map[string]string) string {
	r := &b.res
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format+"\n", args...) }

	p("# metad benchmarks")
	p("")
	p("Written by `make bench` (`go run ./tests/bench`) on %s, in %v. Do not edit: run it again.", time.Now().UTC().Format("2006-01-02 15:04 UTC"), r.took.Round(time.Second))
	p("Every measurement alternates its subjects round by round (rounds: %d), so that the drift of a", b.rounds)
	p("shared machine hits all alike; the tables give medians over the rounds and ratios computed in")
	p("the same run. Ratios are **metad ÷ peer**: above 1 is better for rates, below 1 for times and memory.")
	p("Where the time goes, for the targets missed here: [performance.md](performance.md).")
	if r.quick {
		p("")
		p("> **This is a quick run** (`-quick`: one round, 1 s cells, %d orphans): try-out numbers, not the report's.", b.orphans)
	}
	p("")

	p("## Targets of issue 8")
	p("")
	p("| target | measured (median) | ratio | verdict |")
	p("|---|---|---|---|")
	for _, key := range r.programs {
		sr := r.stream[key]
		ceil := median(sr.ceiling)
		for _, c := range concurrencies {
			m := sr.rate("metad", c)
			rc := ratio(m, ceil)
			p("| stream ≥ 0.85× the spawn ceiling, %s, %d client(s) | %s conn/s vs %s spawns/s | %s | %s |", sr.prog.name, c, num(m, "%.0f"), num(ceil, "%.0f"), x(rc), verdict(rc >= 0.85, rc > 0))
		}
		for _, c := range concurrencies {
			m, t := sr.rate("metad", c), sr.rate("tcpserver", c)
			rt := ratio(m, t)
			p("| stream ≥ 1.4× tcpserver, %s, %d client(s) | %s vs %s conn/s | %s | %s |", sr.prog.name, c, num(m, "%.0f"), num(t, "%.0f"), x(rt), verdict(rt >= 1.4, rt > 0))
		}
	}
	upM, upS := r.upMedian("metad", func(u *upResult) []float64 { return u.up }), r.upMedian("s6", func(u *upResult) []float64 { return u.up })
	p("| 100 services up ≥ 3× faster than s6 | %s vs %s ms | s6 ÷ metad = %s | %s |", num(upM, "%.0f"), num(upS, "%.0f"), x(ratio(upS, upM)), verdict(ratio(upS, upM) >= 3, upM > 0 && upS > 0))
	pssM := r.upMedian("metad", func(u *upResult) []float64 { return u.pss })
	pssR := r.upMedian("runit", func(u *upResult) []float64 { return u.pss })
	pssD := r.upMedian("supervisord", func(u *upResult) []float64 { return u.pss })
	p("| supervisor memory ≤ runit's (PSS, 100 services) | %s vs %s KiB | %s | %s |", num(pssM, "%.0f"), num(pssR, "%.0f"), x(ratio(pssM, pssR)), verdict(pssM <= pssR, pssM > 0 && pssR > 0))
	p("| supervisor memory ≤ ⅓ of supervisord's (PSS) | %s vs %s KiB | %s | %s |", num(pssM, "%.0f"), num(pssD, "%.0f"), x(ratio(pssM, pssD)), verdict(pssM*3 <= pssD, pssM > 0 && pssD > 0))
	stM := r.upMedian("metad", func(u *upResult) []float64 { return u.status })
	stR := r.upMedian("runit", func(u *upResult) []float64 { return u.status })
	stV := r.upMedian("metad", func(u *upResult) []float64 { return u.start })
	p("| `metac list` of 100 services at least as fast as `sv status` | %s vs %s ms (`metac -V` alone: %s) | %s | %s |", num(stM, "%.1f"), num(stR, "%.1f"), num(stV, "%.1f"), x(ratio(stM, stR)), verdict(stM <= stR, stM > 0 && stR > 0))
	rpM, rpT := median(r.reap["metad"]), median(r.reap["tini"])
	p("| reaping ≥ tini's rate | %s vs %s orphans/s | %s | %s |", num(rpM, "%.0f"), num(rpT, "%.0f"), x(ratio(rpM, rpT)), verdict(rpM >= rpT, rpM > 0 && rpT > 0))
	ovM, ovT := r.overheadOf("metad"), r.overheadOf("tini")
	p("| init overhead ≤ tini's | +%.2f vs +%.2f ms | %s | %s |", ovM, ovT, x(ratio(ovM, ovT)), verdict(ovM <= ovT, len(r.overhead["metad"]) > 0 && len(r.overhead["tini"]) > 0))
	var rs float64
	if rr := r.restart["metad"]; rr != nil {
		rs = median(rr.cycle)
	}
	p("| restart after a clean exit < 5 ms | %s ms from start to start | | %s |", num(rs, "%.2f"), verdict(rs < 5, rs > 0))
	p("")

	p("## Machine")
	p("")
	p("| | |")
	p("|---|---|")
	p("| CPUs (nproc) | %d |", r.machine.cpus)
	p("| CPU | %s |", r.machine.cpu)
	p("| kernel | %s |", r.machine.kernel)
	p("| system | %s |", r.machine.os)
	p("| memory | %s |", r.machine.memory)
	p("| load average at start | %s |", r.machine.load)
	p("")
	p("| program | version |")
	p("|---|---|")
	for _, v := range r.versions {
		p("| %s | %s |", v[0], v[1])
	}
	p("")

	p("## Spawn ceiling and stream services")
	p("")
	p("The **spawn ceiling** is a loop in the bench that starts the per-connection program (stdin")
	p("/dev/null) and waits for it, with what metad itself uses: Go's `syscall.ForkExec` (vfork + exec)")
	p("and `wait4`, a new session, three descriptors and the environment, as metad starts a stream")
	p("instance. No server starts per-connection programs faster than this on one core; it has no")
	p("TCP in it, so 1× is out of reach for any server.")
	p("")
	p("Each server runs the same program on its own loopback port. The Go load generator opens a")
	p("connection, sends a request line of its own, half-closes, reads to end of file and checks that")
	p("the reply is that line; only checked replies count. Each cell runs %v; the ceiling loop and the", b.cell)
	p("servers alternate cell by cell, rounds: %d. Latency is from connect to end of file.", b.rounds)
	p("The *minimal Go loop* is a reference written in the bench (tests/bench, `streamLoop`): one")
	p("thread, blocking accept4, ForkExec, close, wait4(WNOHANG), no goroutine, channel or signal and")
	p("no state: the most a Go server can do per connection on this machine.")
	p("")
	for _, key := range r.programs {
		sr := r.stream[key]
		ceil := median(sr.ceiling)
		p("### %s", sr.prog.name)
		p("")
		p("The program: %s.", sr.prog.note)
		p("Spawn ceiling: **%s spawns/s** (one loop, median of %d); %s spawns/s with %d loops in parallel.", num(ceil, "%.0f"), len(sr.ceiling), num(median(sr.ceilingPar), "%.0f"), r.machine.cpus)
		p("")
		p("![connections per second by server and concurrency, %s](%s)", sr.prog.name, charts[key])
		p("")
		p("| clients | server | conn/s | p50 ms | p99 ms | ÷ ceiling | metad ÷ this | errors / conns |")
		p("|---|---|---|---|---|---|---|---|")
		for _, c := range concurrencies {
			m := sr.rate("metad", c)
			for _, s := range streamServerNames {
				cell := sr.cells[s][c]
				if cell == nil {
					p("| %d | %s | not measured | | | | | |", c, s)
					continue
				}
				rate := median(cell.rates)
				p("| %d | %s | %.0f | %.2f | %.2f | %s | %s | %d / %d |", c, s, rate, median(cell.p50), median(cell.p99), x(ratio(rate, ceil)), x(ratio(m, rate)), cell.errs, cell.conns)
			}
		}
		for _, s := range streamServerNames {
			for _, c := range concurrencies {
				if cell := sr.cells[s][c]; cell != nil && cell.firstErr != nil {
					p("")
					p("First error of %s at %d clients: `%v`", s, c, cell.firstErr)
				}
			}
		}
		p("")
	}

	p("## 100 daemon services")
	p("")
	p("Each supervisor starts 100 services running `sleep %s` (a private copy of sleep, so that", sleepArg)
	p("fanotify reports each execution as it happens: no polling). *Up* is from starting the supervisor to")
	p("the 100th execution. Memory is the sum over the supervisor's own processes, the sleeps excluded")
	p("(s6: s6-svscan and 100 s6-supervise; runit: runsvdir and 100 runsv), after 1.5 s. The status")
	p("query asks for all 100 and checks that all are running.")
	p("")
	p("| supervisor | up ms | metad ÷ this | PSS KiB | metad ÷ this | RSS KiB | processes | status query | ms | metad ÷ this |")
	p("|---|---|---|---|---|---|---|---|---|---|")
	if u := r.up[floorName]; u != nil && len(u.up) > 0 {
		p("| %s | %.0f | %s | | | | | | | |", floorName, median(u.up), x(ratio(upM, median(u.up))))
	}
	for _, name := range supervisorNames {
		u := r.up[name]
		if u == nil || len(u.up) == 0 {
			p("| %s | not measured | | | | | | | | |", name)
			continue
		}
		p("| %s | %.0f | %s | %.0f | %s | %.0f | %d | %s | %.1f | %s |", name, median(u.up), x(ratio(upM, median(u.up))),
			median(u.pss), x(ratio(pssM, median(u.pss))), median(u.rss), u.procs, u.query, median(u.status), x(ratio(stM, median(u.status))))
		if name == "metad" && len(u.start) > 0 {
			p("| floor of metac | | | | | | | metac -V (no query) | %.1f | %s |", median(u.start), x(ratio(stM, median(u.start))))
		}
	}
	p("")
	p("The floor is a helper of the bench that starts the 100 sleeps one after the other with Go's")
	p("ForkExec and nothing else: what starting 100 dynamically linked programs costs on this machine.")
	p("s6 and runit start each service with a `run` script, `#!/bin/sh` + `exec sleep %s`, as their", sleepArg)
	p("documentation does; metad and supervisord execute sleep directly. The floor of metac is `metac -V`,")
	p("timed between metad's queries: the same program starting and exiting, with no query at all.")
	p("")

	p("## Restart after a clean exit")
	p("")
	p("Each supervisor runs one service that exits 0 at once (a static `exit(0)`); fanotify times each")
	p("execution for %v. The time from one start to the next is the supervisor's restart", restartWindow)
	p("latency plus the program's own few microseconds. The floor is a loop that spawns the same")
	p("program and waits for it.")
	p("")
	p("| supervisor | start to start, ms (mean) | median gap ms | restarts counted |")
	p("|---|---|---|---|")
	p("| floor: spawn + wait loop | %s | | |", num(median(r.restartFloor), "%.3f"))
	for _, name := range supervisorNames {
		rr := r.restart[name]
		if rr == nil || len(rr.cycle) == 0 {
			p("| %s | not measured | | |", name)
			continue
		}
		p("| %s | %.2f | %.2f | %d |", name, median(rr.cycle), median(rr.gap), rr.count)
	}
	p("")
	p("supervisord is configured with `startsecs=0 autorestart=true` (otherwise a program that exits")
	p("at once is a failed start, and given up). runit and s6 wait 1 s before restarting a service")
	p("that ran less than 1 s; metad restarts a clean exit at once (a crash backs off).")
	p("")

	p("## PID 1: reaping orphans")
	p("")
	p("Each init runs as PID 1 of a new PID namespace. Its command has a helper start %d tiny", b.orphans)
	p("processes blocked on one pipe and exit, so that all become orphans of PID 1, then closes the")
	p("pipe: all exit at once. The time runs until none of the pids exists any more (`kill(pid, 0)`")
	p("fails only once PID 1 has reaped the zombie), so it includes the processes' own exits.")
	p("")
	p("| init | orphans/s (median) | metad ÷ this | lowest – highest | runs |")
	p("|---|---|---|---|---|")
	for _, name := range initNames {
		v := r.reap[name]
		spread := ""
		if len(v) > 0 {
			spread = fmt.Sprintf("%.0f – %.0f", slices.Min(v), slices.Max(v))
		}
		p("| %s | %s | %s | %s | %d |", name, num(median(v), "%.0f"), x(ratio(rpM, median(v))), spread, len(v))
	}
	p("")
	p("Every init waits for the same exits: where the ranges overlap, the inits do not differ.")
	p("")

	p("## Init overhead")
	p("")
	p("`INIT -- /bin/true` against `/bin/true` alone, started and waited for from the bench, interleaved")
	p("run by run (%d runs each); not PID 1. metad runs with an empty config and a private control", len(r.overhead["/bin/true"]))
	p("socket, as a container would run it. The *minimal Go init* is built by the bench from a")
	p("15-line program (ForkExec, wait4, exit; tests/bench/inits.go) as metad is built: the cost of")
	p("Go's runtime starting and stopping, which any init written in Go pays.")
	p("")
	p("| command | median ms | overhead ms | metad ÷ this (overhead) |")
	p("|---|---|---|---|")
	for _, name := range append([]string{"/bin/true", goInitName}, initNames...) {
		v := r.overhead[name]
		if len(v) == 0 {
			p("| %s | not measured | | |", name)
			continue
		}
		if name == "/bin/true" {
			p("| /bin/true | %.2f | | |", median(v))
			continue
		}
		p("| %s -- /bin/true | %.2f | +%.2f | %s |", name, median(v), r.overheadOf(name), x(ratio(ovM, r.overheadOf(name))))
	}
	p("")

	p("## metac list of 1000 services")
	p("")
	if l := r.list; l != nil {
		p("metad with 1000 `sleep` daemons (all %d executed %.0f ms after metad started). `metac list`", b.many, l.up)
		p("is timed as a whole command (start, query, print 1000 lines), alternating local and network.")
		p("")
		p("| transport | median ms | runs |")
		p("|---|---|---|")
		p("| local socket | %s | %d |", num(median(l.local), "%.1f"), len(l.local))
		if l.netErr != nil {
			p("| network (UDP, loopback, `-k` key) | **not ready**: `%v` | %d |", l.netErr, len(l.net))
		} else {
			p("| network (UDP, loopback, `-k` key) | %s | %d |", num(median(l.net), "%.1f"), len(l.net))
		}
	} else {
		p("Not measured: see the problems below.")
	}
	p("")

	p("%s", b.fleetMarkdown())
	p("## Binary size and idle memory")
	p("")
	p("Idle: an init with a sleeping command, a supervisor with no service, an inetd with one service")
	p("and no connection; the program's own process, after 1 s.")
	p("")
	p("| program | bytes on disk | linking | idle PSS KiB | idle RSS KiB | note |")
	p("|---|---|---|---|---|---|")
	for _, row := range r.idle {
		note := row.extra
		if row.err != nil {
			note = row.err.Error()
		}
		pss, rss := num(float64(row.mem.pss), "%.0f"), num(float64(row.mem.rss), "%.0f")
		if row.mem.rss == 0 && row.err == nil {
			pss, rss = "(not run)", ""
		}
		p("| %s | %d | %s | %s | %s | %s |", row.name, row.size, row.linking, pss, rss, note)
	}
	p("")

	p("## How to reproduce")
	p("")
	p("```sh")
	p("make bench    # as root: installs the peers from Debian if missing, builds metad, runs everything")
	p("go run ./tests/bench -quick   # a one-round try-out")
	p("go run ./tests/bench -h       # settings: cell duration, rounds, orphans, output paths")
	p("```")
	p("")
	p("The stream benchmark runs two per-connection programs, the same binary for every server:")
	p("busybox-static's `cat`, a common small static program (the issue's setting), and 172 bytes of")
	p("x86-64 written by the bench itself (tests/bench/tiny.go: `read(0)`, `write(1)` what it read,")
	p("`exit(0)`), with no libc, loader or runtime, so that each server's own accept → spawn → reap")
	p("path weighs most. Executions are timed with fanotify on private copies of the programs. Every")
	p("subject runs in a PID namespace of its own (the inits as its PID 1, the others under a small")
	p("helper), killed at the end of its measurement, and the kernel kills the namespaces if the bench")
	p("dies; only the loopback is used, but for the fleet step, which builds network namespaces of its own; the bench removes its temporary directory. The whole run is")
	p("bounded (%v here). For profiling by hand, `go run ./tests/bench -helper load PORT CLIENTS 10s`", r.took.Round(time.Second))
	p("runs the load generator alone.")
	p("")
	if len(r.notes) > 0 {
		p("## Problems in this run")
		p("")
		for _, n := range r.notes {
			p("- %s", strings.ReplaceAll(n, "\n", " "))
		}
		p("")
	}
	return w.String()
}

// streamChart draws conn/s per concurrency per server as grouped bars,
// with the spawn ceiling as a dashed line.
func (b *bench) streamChart(sr *streamResult) string {
	r := &b.res
	colors := map[string]string{"metad": "#2b6cb0", "tcpserver": "#c05621", "xinetd": "#718096", referenceName: "#cbd5e0"}
	const (
		width, height = 760, 400
		left, right   = 70, 20
		top, bottom   = 60, 60
	)
	ceil := median(sr.ceiling)
	top1 := ceil
	for _, s := range streamServerNames {
		for _, c := range concurrencies {
			top1 = max(top1, sr.rate(s, c))
		}
	}
	if top1 == 0 {
		top1 = 1
	}
	step := niceStep(top1 / 5)
	ymax := math.Ceil(top1*1.1/step) * step
	plotH := float64(height - top - bottom)
	plotW := float64(width - left - right)
	y := func(v float64) float64 { return float64(top) + plotH*(1-v/ymax) }

	var s strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&s, format+"\n", args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`, width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>`)
	p(`<text x="%d" y="22" font-size="15" font-weight="bold">Stream service running %s: connections per second</text>`, left, sr.prog.name)
	p(`<text x="%d" y="40" fill="#4a5568">median over the rounds, higher is better; the load generator checks every reply</text>`, left)
	for v := 0.0; v <= ymax+step/2; v += step {
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e2e8f0"/>`, left, width-right, y(v), y(v))
		p(`<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`, left-6, y(v)+4, v)
	}
	groupW := plotW / float64(len(concurrencies))
	barW := groupW * 0.8 / float64(len(streamServerNames))
	for gi, c := range concurrencies {
		gx := float64(left) + groupW*float64(gi) + groupW*0.1
		for si, srv := range streamServerNames {
			v := sr.rate(srv, c)
			bx := gx + barW*float64(si)
			p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, bx, y(v), barW-4, float64(top)+plotH-y(v), colors[srv])
			p(`<text x="%.1f" y="%.1f" text-anchor="middle">%.0f</text>`, bx+(barW-4)/2, y(v)-4, v)
		}
		label := "clients"
		if c == 1 {
			label = "client"
		}
		p(`<text x="%.1f" y="%d" text-anchor="middle">%d %s</text>`, float64(left)+groupW*(float64(gi)+0.5), height-bottom+18, c, label)
	}
	if ceil > 0 {
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#2f855a" stroke-width="2" stroke-dasharray="6 4"/>`, left, width-right, y(ceil), y(ceil))
		p(`<text x="%d" y="%.1f" text-anchor="end" fill="#2f855a">spawn ceiling %.0f/s</text>`, width-right-4, y(ceil)-6, ceil)
	}
	lx := left
	for _, srv := range streamServerNames {
		p(`<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`, lx, height-22, colors[srv], lx+16, height-12, srv)
		lx += 16 + 8*len(srv) + 20
	}
	p(`<text x="%d" y="%d" fill="#4a5568">%d CPUs, %s</text>`, lx+10, height-12, r.machine.cpus, r.machine.kernel)
	p(`</svg>`)
	return s.String()
}

// niceStep rounds a step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}
