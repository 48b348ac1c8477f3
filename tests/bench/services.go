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
	"slices"
	"strings"
	"time"
)

// supervisorNames are the supervisors of the daemon benchmarks, metad
// first.
var supervisorNames = []string{"metad", "s6", "runit", "supervisord"}

// floorName is the reference of the start-up benchmark: a Go loop that
// starts the services one after the other (spawnSleeps).
const floorName = "floor: Go spawn loop"

// sleepArg is the argument of every supervised sleep: about a day.
const sleepArg = "86400"

// supervision is one supervisor set up with a number of services.
type supervision struct {
	argv []string
	// status runs the supervisor's query of every service once and
	// checks that it reports want services running.
	status func(want int) error
	// statusCmd describes the query for the report.
	statusCmd string
}

// supervise writes the config of supervisor name for the given services
// (name → program and arguments) in dir.
func (b *bench) supervise(name, dir string, svcs []service, restartFast bool) (*supervision, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	switch name {
	case "metad":
		return b.superviseMetad(dir, svcs, "")
	case "s6":
		return superviseS6(dir, svcs)
	case "runit":
		return superviseRunit(dir, svcs)
	case "supervisord":
		return superviseSupervisord(dir, svcs, restartFast)
	}
	return nil, fmt.Errorf("unknown supervisor %q", name)
}

// service is one supervised program.
type service struct {
	name string
	argv []string
}

// sleepers returns n services running the private sleep.
func (b *bench) sleepers(n int) []service {
	svcs := make([]service, n)
	for i := range svcs {
		svcs[i] = service{name: fmt.Sprintf("s%04d", i), argv: []string{b.sleep, sleepArg}}
	}
	return svcs
}

// superviseMetad writes a metad config; with a key file, network control
// listens on netPort.
func (b *bench) superviseMetad(dir string, svcs []service, netArgs string) (*supervision, error) {
	var conf strings.Builder
	for _, s := range svcs {
		fmt.Fprintf(&conf, "%s daemon %s\n", s.name, strings.Join(s.argv, " "))
	}
	path := filepath.Join(dir, "metad.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o644); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "metad.sock")
	argv := []string{b.metad, "-f", path, "-s", sock}
	if netArgs != "" {
		argv = append(argv, strings.Fields(netArgs)...)
	}
	query := []string{b.metac, "-s", sock, "list"}
	return &supervision{
		argv:      argv,
		statusCmd: "metac list",
		status: func(want int) error {
			return expectLines(query, "ready", want)
		},
	}, nil
}

// serviceDirs makes dir/sub holding one directory per service with a run
// script, as s6 and runit want them, and returns dir/sub and the service
// directories.
func serviceDirs(dir, sub string, svcs []service) (string, []string, error) {
	scan := filepath.Join(dir, sub)
	if err := os.Mkdir(scan, 0o755); err != nil {
		return "", nil, err
	}
	var dirs []string
	for _, s := range svcs {
		d := filepath.Join(scan, s.name)
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", nil, err
		}
		run := "#!/bin/sh\nexec " + strings.Join(s.argv, " ") + "\n"
		if err := os.WriteFile(filepath.Join(d, "run"), []byte(run), 0o755); err != nil {
			return "", nil, err
		}
		dirs = append(dirs, d)
	}
	return scan, dirs, nil
}

// lookPaths finds every program, or fails on the first missing one.
func lookPaths(names ...string) ([]string, error) {
	paths := make([]string, len(names))
	for i, n := range names {
		p, err := lookPath(n)
		if err != nil {
			return nil, err
		}
		paths[i] = p
	}
	return paths, nil
}

func superviseS6(dir string, svcs []service) (*supervision, error) {
	progs, err := lookPaths("s6-svscan", "s6-svstat")
	if err != nil {
		return nil, err
	}
	scan, dirs, err := serviceDirs(dir, "scan", svcs)
	if err != nil {
		return nil, err
	}
	return &supervision{
		argv:      []string{progs[0], scan},
		statusCmd: "s6-svstat DIR, once per service",
		status: func(want int) error {
			up := 0
			for _, d := range dirs {
				out, err := exec.Command(progs[1], d).Output()
				if err != nil {
					return fmt.Errorf("s6-svstat %s: %w", d, err)
				}
				if bytes.HasPrefix(out, []byte("up ")) {
					up++
				}
			}
			if up != want {
				return fmt.Errorf("s6-svstat: %d services up, want %d", up, want)
			}
			return nil
		},
	}, nil
}

func superviseRunit(dir string, svcs []service) (*supervision, error) {
	progs, err := lookPaths("runsvdir", "sv")
	if err != nil {
		return nil, err
	}
	scan, dirs, err := serviceDirs(dir, "service", svcs)
	if err != nil {
		return nil, err
	}
	query := append([]string{progs[1], "status"}, dirs...)
	return &supervision{
		argv:      []string{progs[0], scan},
		statusCmd: "sv status DIR...",
		status: func(want int) error {
			return expectLines(query, "run: ", want)
		},
	}, nil
}

func superviseSupervisord(dir string, svcs []service, restartFast bool) (*supervision, error) {
	progs, err := lookPaths("supervisord", "supervisorctl")
	if err != nil {
		return nil, err
	}
	supervisord, ctl := progs[0], progs[1]
	var c strings.Builder
	fmt.Fprintf(&c, `[supervisord]
nodaemon=true
logfile=%[1]s/supervisord.log
pidfile=%[1]s/supervisord.pid
childlogdir=%[1]s
loglevel=warn

[unix_http_server]
file=%[1]s/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%[1]s/supervisor.sock
`, dir)
	for _, s := range svcs {
		fmt.Fprintf(&c, "\n[program:%s]\ncommand=%s\nstdout_logfile=NONE\nstderr_logfile=NONE\n", s.name, strings.Join(s.argv, " "))
		if restartFast {
			// A program that exits at once is a failed start unless
			// startsecs is 0; then it is an exit, restarted at once.
			c.WriteString("startsecs=0\nautorestart=true\nexitcodes=0\n")
		}
	}
	conf := filepath.Join(dir, "supervisord.conf")
	if err := os.WriteFile(conf, []byte(c.String()), 0o644); err != nil {
		return nil, err
	}
	query := []string{ctl, "-c", conf, "status"}
	return &supervision{
		argv:      []string{supervisord, "-n", "-c", conf},
		statusCmd: "supervisorctl status",
		status: func(want int) error {
			return expectLines(query, "RUNNING", want)
		},
	}, nil
}

// expectLines runs argv and checks that want lines of its output contain
// word. The exit status is not checked: supervisorctl, for one, fails when
// a service is not running, which the count shows better.
func expectLines(argv []string, word string, want int) error {
	var stderr bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return err
	}
	got := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, word) {
			got++
		}
	}
	if got != want {
		return fmt.Errorf("%s: %d lines with %q, want %d (%v: %s)", filepath.Base(argv[0]), got, word, want, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// upResult is one supervisor's daemon benchmark, over the rounds.
type upResult struct {
	up     []float64 // ms until every service's program was executed
	pss    []float64 // KiB, the supervisor's own processes
	rss    []float64
	procs  int       // the supervisor's own processes
	status []float64 // ms, one query of every service
	query  string
	start  []float64 // metad only: ms of metac -V, which starts and exits without a query
}

// benchServices starts each supervisor with 100 sleeps, round by round:
// the time until all 100 have been executed (inotify on the private sleep
// binary: no polling), the memory of the supervisor's own processes (the
// sleeps excluded), and the time of its status query of all of them.
func (b *bench) benchServices() error {
	b.res.up = make(map[string]*upResult)
	for r := range b.rounds {
		for _, name := range rotate(append([]string{floorName}, supervisorNames...), r) {
			res := b.res.up[name]
			if res == nil {
				res = &upResult{}
				b.res.up[name] = res
			}
			if err := b.upOnce(name, r, res); err != nil {
				b.note("100 services, %s, round %d: %v", name, r+1, err)
				b.logf("   %s: %v", name, err)
			}
		}
	}
	return nil
}

// statusQueries is how many status queries each round times.
const statusQueries = 5

func (b *bench) upOnce(name string, r int, res *upResult) error {
	dir := filepath.Join(b.dir, fmt.Sprintf("up-%d-%d", slices.Index(supervisorNames, name), r))
	var sup *supervision
	if name == floorName {
		sup = &supervision{argv: []string{b.self, helperFlag, "spawn-sleeps", fmt.Sprint(b.services), b.sleep, sleepArg}}
	} else {
		var err error
		if sup, err = b.supervise(name, dir, b.sleepers(b.services), false); err != nil {
			return err
		}
	}
	defer os.RemoveAll(dir)
	res.query = sup.statusCmd
	s, up, err := b.startSleepers(fmt.Sprintf("up-%d-%d", slices.Index(supervisorNames, name), r), sup.argv, b.services)
	if s != nil {
		defer s.stop()
	}
	if err != nil {
		return err
	}
	res.up = append(res.up, ms(up))
	if sup.status == nil {
		b.logf("   round %d %-20s up %7.1f ms", r+1, name, ms(up))
		return nil
	}

	// Let start-up settle (supervisord calls a program RUNNING after
	// startsecs, 1s), then measure.
	time.Sleep(1500 * time.Millisecond)
	var own []int
	sleeping := 0
	for _, p := range descendants(s.pid()) {
		if exePath(p.pid) == b.sleep {
			sleeping++
			continue
		}
		own = append(own, p.pid)
	}
	if sleeping != b.services {
		return fmt.Errorf("%d sleeps running, want %d", sleeping, b.services)
	}
	m, err := memoryOf(own)
	if err != nil {
		return err
	}
	res.pss, res.rss, res.procs = append(res.pss, float64(m.pss)), append(res.rss, float64(m.rss)), len(own)
	var qs, starts []float64
	for range statusQueries {
		t := time.Now()
		if err := sup.status(b.services); err != nil {
			return err
		}
		qs = append(qs, ms(time.Since(t)))
		if name != "metad" {
			continue
		}
		// The floor of any query metac makes: the program starting and
		// exiting, timed between the queries.
		t = time.Now()
		if out, err := exec.Command(b.metac, "-V").CombinedOutput(); err != nil {
			return fmt.Errorf("metac -V: %v: %s", err, out)
		}
		starts = append(starts, ms(time.Since(t)))
	}
	res.status = append(res.status, median(qs))
	if len(starts) > 0 {
		res.start = append(res.start, median(starts))
	}
	b.logf("   round %d %-20s up %7.1f ms  PSS %6d KiB  RSS %6d KiB (%d processes)  status %7.1f ms",
		r+1, name, ms(up), m.pss, m.rss, len(own), median(qs))
	return nil
}

// startSleepers starts a supervisor of n sleeps and returns it with the
// time until the n-th sleep was executed. The caller stops the subject,
// which is returned (and must be stopped) even with an error.
func (b *bench) startSleepers(name string, argv []string, n int) (*subject, time.Duration, error) {
	w, err := newExecWatch(b.sleep)
	if err != nil {
		return nil, 0, err
	}
	defer w.close()
	start := time.Now()
	s, err := b.start(name, argv, os.Environ())
	if err != nil {
		return nil, 0, err
	}
	patience := 30*time.Second + time.Duration(n)*50*time.Millisecond
	times, err := w.wait(n, start.Add(patience))
	if err != nil {
		return s, 0, err
	}
	if len(times) < n {
		return s, 0, fmt.Errorf("%d of %d services started in %v; log: %s", len(times), n, patience, s.tail())
	}
	return s, times[len(times)-1].Sub(start), nil
}

// restartResult is one supervisor's restart benchmark.
type restartResult struct {
	cycle []float64 // ms from one start of the program to the next, per round (mean)
	gap   []float64 // the same, median of the gaps
	count int
}

// restartWindow is how long each supervisor's restarts are counted.
const restartWindow = 3 * time.Second

// benchRestart has each supervisor run a program that exits 0 at once, and
// times the executions: the time from one start to the next is the
// restart latency plus the program's own few microseconds.
func (b *bench) benchRestart() error {
	b.res.restart = make(map[string]*restartResult)
	for r := range b.rounds {
		for _, name := range rotate(supervisorNames, r) {
			res := b.res.restart[name]
			if res == nil {
				res = &restartResult{}
				b.res.restart[name] = res
			}
			if err := b.restartOnce(name, r, res); err != nil {
				b.note("restart, %s, round %d: %v", name, r+1, err)
				b.logf("   %s: %v", name, err)
			}
		}
	}
	// The same cycle with nothing in between: spawn and wait in a loop.
	for range b.rounds {
		n, d := spawnLoop([]string{b.tinyRun}, 1, time.Second)
		b.res.restartFloor = append(b.res.restartFloor, ms(d)/float64(n))
	}
	return nil
}

func (b *bench) restartOnce(name string, r int, res *restartResult) error {
	dir := filepath.Join(b.dir, fmt.Sprintf("restart-%s-%d", name, r))
	sup, err := b.supervise(name, dir, []service{{name: "quick", argv: []string{b.tinyRun}}}, true)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	w, err := newExecWatch(b.tinyRun)
	if err != nil {
		return err
	}
	defer w.close()
	s, err := b.start(fmt.Sprintf("restart-%s-%d", name, r), sup.argv, os.Environ())
	if err != nil {
		return err
	}
	defer s.stop()
	first, err := w.wait(1, time.Now().Add(10*time.Second))
	if err != nil || len(first) == 0 {
		return fmt.Errorf("the program never started (%v); log: %s", err, s.tail())
	}
	times, err := w.wait(1<<30, time.Now().Add(restartWindow))
	if err != nil {
		return err
	}
	times = append(first, times...)
	if len(times) < 2 {
		return fmt.Errorf("no restart in %v; log: %s", restartWindow, s.tail())
	}
	var gaps []float64
	for i := 1; i < len(times); i++ {
		gaps = append(gaps, ms(times[i].Sub(times[i-1])))
	}
	cycle := ms(times[len(times)-1].Sub(times[0])) / float64(len(times)-1)
	res.cycle = append(res.cycle, cycle)
	res.gap = append(res.gap, median(gaps))
	res.count += len(times) - 1
	b.logf("   round %d %-11s %5d restarts, %8.2f ms each (median gap %.2f ms)", r+1, name, len(times)-1, cycle, median(gaps))
	return nil
}

// listResult is metac list of many services.
type listResult struct {
	up         float64 // ms until all were executed
	local, net []float64
	netErr     error
}

// benchList runs metad with 1000 sleeps and times metac list, on the local
// socket and over the network (UDP on the loopback, with a key file),
// alternating.
func (b *bench) benchList() error {
	dir := filepath.Join(b.dir, "list")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	port, err := freeUDPPort()
	if err != nil {
		return err
	}
	key := filepath.Join(dir, "metad.key")
	secret := make([]byte, 32)
	rand.Read(secret)
	if err := os.WriteFile(key, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		return err
	}
	netArgs := fmt.Sprintf("-p %d -k %s", port, key)
	sup, err := b.superviseMetad(dir, b.sleepers(b.many), netArgs)
	if err != nil {
		return err
	}
	s, up, err := b.startSleepers("list-metad", sup.argv, b.many)
	if s != nil {
		defer s.stop()
	}
	if err != nil {
		return err
	}
	res := &listResult{up: ms(up)}
	b.res.list = res
	time.Sleep(time.Second)
	local := sup.argv[:0:0]
	local = append(local, b.metac, "-s", filepath.Join(dir, "metad.sock"), "list")
	remote := []string{b.metac, "-h", "127.0.0.1", "-p", fmt.Sprint(port), "-k", key, "list"}
	for i := range 10 * b.rounds {
		for _, which := range rotate([]string{"local", "net"}, i) {
			if which == "net" && res.netErr != nil {
				continue
			}
			argv := local
			if which == "net" {
				argv = remote
			}
			t := time.Now()
			err := expectLines(argv, "ready", b.many)
			d := ms(time.Since(t))
			switch {
			case err != nil && which == "net":
				res.netErr = err
			case err != nil:
				return err
			case which == "net":
				res.net = append(res.net, d)
			default:
				res.local = append(res.local, d)
			}
		}
	}
	b.logf("   up %.0f ms; metac list: local %.1f ms, network %.1f ms (%v)", res.up, median(res.local), median(res.net), res.netErr)
	return nil
}

// median of xs; 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
