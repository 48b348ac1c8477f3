// Command bench measures metad side by side with the programs it replaces
// (tini, catatonit, dumb-init, xinetd, tcpserver, s6, runit, supervisord)
// and writes docs/BENCHMARKS.md with the tables and docs/bench-stream.svg.
// `make bench` installs the peers and runs it; it needs root (PID
// namespaces, supervisors' service directories) and Linux on amd64.
//
// Every measurement alternates its subjects round by round, so that the
// drift of a shared, noisy machine hits all alike, and reports medians and
// ratios. Every subject runs in a PID namespace of its own, killed with it
// at the end of its measurement (and by the kernel if the bench dies), and
// everything lives in one temporary directory removed at the end. Only the
// loopback interface is used, but for the fleet step, which builds network
// namespaces of its own.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// bench is one run of the benchmarks: its settings, its files and what
// it has measured.
type bench struct {
	dir     string // temporary directory, removed at the end
	self    string // this program, for the helpers
	tiny    string // the per-connection program (tinyCode)
	tinyRun string // exit(0) (trueCode), for restarts
	sleep   string // a private copy of sleep(1), whose executions are counted
	metad   string
	metac   string
	compare string // another metad binary, measured beside metad (stream, reaping, overhead)

	cell     time.Duration // one stream measurement
	rounds   int
	services int // daemon services of the supervisor benchmark
	many     int // services of the list benchmark
	orphans  int

	progress io.Writer
	live     live
	res      results
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == helperFlag {
		os.Exit(runHelper(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	b := &bench{progress: os.Stderr}
	var out, metad string
	var quick bool
	var only string
	flag.StringVar(&out, "out", "docs/BENCHMARKS.md", "the report to write; the charts (bench-stream*.svg) go next to it")
	flag.StringVar(&metad, "metad", "bin/metad", "the metad binary to measure")
	flag.StringVar(&b.compare, "compare", "", "another metad binary to measure beside it in the stream, reaping and init overhead steps (the progress shows it as \""+compareName+"\"; the report does not)")
	flag.DurationVar(&b.cell, "cell", 3*time.Second, "duration of one stream measurement")
	flag.IntVar(&b.rounds, "rounds", 3, "rounds of every alternating measurement")
	flag.IntVar(&b.orphans, "orphans", 5000, "orphans in the reaping burst")
	flag.StringVar(&only, "only", "", "run only these steps, comma-separated: stream,services,restart,reap,overhead,list,fleet,idle")
	flag.BoolVar(&quick, "quick", false, "a short run to try the bench (1 round, 1s cells): its numbers are not the report's")
	flag.Parse()
	b.services, b.many = 100, 1000
	if quick {
		b.cell, b.rounds, b.orphans = time.Second, 1, 1000
	}

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (PID namespaces, service directories of the supervisors)")
		return 2
	}
	if b.compare != "" {
		var err error
		if b.compare, err = filepath.Abs(b.compare); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 2
		}
	}
	if err := b.setup(metad); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	defer b.cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench: %v: cleaning up\n", s)
		b.cleanup()
		os.Exit(1)
	}()

	start := time.Now()
	b.res.machine = machineInfo()
	b.res.versions = peerVersions(b.metad)
	steps := []struct {
		key, name string
		f         func() error
	}{
		{"stream", "spawn ceiling and stream services", b.benchStream},
		{"services", "100 daemon services", b.benchServices},
		{"restart", "restart after a clean exit", b.benchRestart},
		{"reap", "PID 1: reaping orphans", b.benchReap},
		{"overhead", "init overhead", b.benchOverhead},
		{"list", "metac list of 1000 services", b.benchList},
		{"fleet", "fleet: metac -b against an ssh loop", b.benchFleet},
		{"idle", "binary size and idle memory", b.benchIdle},
	}
	for _, s := range steps {
		if only != "" && !slices.Contains(strings.Split(only, ","), s.key) {
			continue
		}
		b.logf("== %s", s.name)
		t := time.Now()
		if err := s.f(); err != nil {
			b.note("%s: %v", s.name, err)
			b.logf("%s: %v", s.name, err)
		}
		b.killAll()
		b.logf("   (%v)", time.Since(t).Round(time.Second))
	}
	b.res.took = time.Since(start)
	b.res.quick = quick
	if err := b.writeReport(out); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	b.logf("wrote %s in %v", out, b.res.took.Round(time.Second))
	return 0
}

// setup makes the temporary directory and the programs the benchmarks run.
func (b *bench) setup(metad string) error {
	var err error
	if b.metad, err = filepath.Abs(metad); err != nil {
		return err
	}
	b.metac = filepath.Join(filepath.Dir(b.metad), "metac")
	for _, p := range []string{b.metad, b.metac} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("cannot find %s (make build): %w", p, err)
		}
	}
	if b.dir, err = os.MkdirTemp("", "metad-bench-"); err != nil {
		return err
	}
	for _, d := range []string{"bin", "log"} {
		if err := os.Mkdir(filepath.Join(b.dir, d), 0o755); err != nil {
			return err
		}
	}
	bin := filepath.Join(b.dir, "bin")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b.self = filepath.Join(bin, "bench")
	if err := copyFile(self, b.self); err != nil {
		return err
	}
	b.tiny, b.tinyRun = filepath.Join(bin, "tiny"), filepath.Join(bin, "restart-true")
	if err := writeTiny(b.tiny, tinyCode); err != nil {
		return err
	}
	if err := writeTiny(b.tinyRun, trueCode); err != nil {
		return err
	}
	sleep, err := lookPath("sleep")
	if err != nil {
		return err
	}
	b.sleep = filepath.Join(bin, "sleep")
	return copyFile(sleep, b.sleep)
}

// cleanup kills every subject and removes the temporary directory.
func (b *bench) cleanup() {
	b.killAll()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, format+"\n", args...)
}

// note records a problem for the report: a measurement that could not be
// made is shown as such, not left out silently.
func (b *bench) note(format string, args ...any) {
	b.res.notes = append(b.res.notes, fmt.Sprintf(format, args...))
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// rotate returns xs started at index r: round r of an alternation.
func rotate[T any](xs []T, r int) []T {
	if len(xs) == 0 {
		return nil
	}
	r %= len(xs)
	return append(append([]T{}, xs[r:]...), xs[:r]...)
}
