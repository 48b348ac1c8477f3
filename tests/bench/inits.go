package main

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// initNames are the inits of the PID 1 benchmarks, metad first.
var initNames = []string{"metad", "tini", "catatonit", "dumb-init"}

// inits are the inits measured: initNames, and the metad of -compare.
func (b *bench) inits() []string {
	if b.compare == "" {
		return initNames
	}
	return append(slices.Clone(initNames), compareName)
}

// initArgv returns the command line that runs command under init name.
// metad gets an empty config and a private control socket.
func (b *bench) initArgv(name, dir string, command ...string) ([]string, error) {
	if name == "metad" || name == compareName {
		bin := b.metad
		if name == compareName {
			bin = b.compare
		}
		conf := filepath.Join(dir, "empty.conf")
		if err := os.WriteFile(conf, nil, 0o644); err != nil {
			return nil, err
		}
		return append([]string{bin, "-f", conf, "-s", filepath.Join(dir, "metad.sock"), "--"}, command...), nil
	}
	path, err := lookPath(name)
	if err != nil {
		return nil, err
	}
	return append([]string{path, "--"}, command...), nil
}

// benchReap runs each init as PID 1 of a new namespace with reapMain as
// its command, round by round, and records orphans reaped per second.
func (b *bench) benchReap() error {
	b.res.reap = make(map[string][]float64)
	for r := range b.rounds {
		for _, name := range rotate(b.inits(), r) {
			rate, err := b.reapOnce(name, r)
			if err != nil {
				b.note("reaping, %s, round %d: %v", name, r+1, err)
				b.logf("   %s: %v", name, err)
				continue
			}
			b.res.reap[name] = append(b.res.reap[name], rate)
			b.logf("   round %d %-10s %6.0f orphans/s", r+1, name, rate)
		}
	}
	return nil
}

func (b *bench) reapOnce(name string, r int) (float64, error) {
	dir := filepath.Join(b.dir, fmt.Sprintf("reap-%s-%d", name, r))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	result := filepath.Join(dir, "result")
	argv, err := b.initArgv(name, dir, b.self, helperFlag, "reap-main", fmt.Sprint(b.orphans), b.tiny, result)
	if err != nil {
		return 0, err
	}
	s, err := b.startInit(fmt.Sprintf("reap-%s-%d", name, r), argv, os.Environ())
	if err != nil {
		return 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	select {
	case err = <-exited:
		s.b.track(s, false)
	case <-time.After(120 * time.Second):
		s.stop()
		return 0, fmt.Errorf("no result in 120s; log: %s", s.tail())
	}
	if err != nil {
		return 0, fmt.Errorf("%v; log: %s", err, s.tail())
	}
	n, d, err := readReapResult(result)
	if err != nil {
		return 0, fmt.Errorf("%v; log: %s", err, s.tail())
	}
	return float64(n) / d.Seconds(), nil
}

// goInitName is the reference of the overhead benchmark.
const goInitName = "minimal Go init"

// goInitSource is the least an init written in Go does: start the command,
// wait for it, exit with its status. Its overhead is that of Go's runtime
// starting and stopping, which no init in Go can avoid.
const goInitSource = `package main

import (
	"os"
	"syscall"
)

func main() {
	pid, err := syscall.ForkExec(os.Args[2], os.Args[2:], &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	if err != nil {
		os.Exit(127)
	}
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	os.Exit(ws.ExitStatus())
}
`

// buildGoInit builds goInitSource as metad is built (static, stripped).
func (b *bench) buildGoInit() (string, error) {
	dir := filepath.Join(b.dir, "goinit")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module goinit\n\ngo 1.21\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(goInitSource), 0o644); err != nil {
		return "", err
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go" // where make finds it on our machines
	}
	out := filepath.Join(b.dir, "bin", "goinit")
	cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cannot build the minimal Go init: %v: %s", err, msg)
	}
	return out, nil
}

// overheadRuns is how many times each init runs /bin/true per round.
const overheadRuns = 100

// benchOverhead times `INIT -- /bin/true` against /bin/true alone,
// interleaved run by run (like hyperfine, in Go): the difference of the
// medians is what the init adds to a container's start and stop.
func (b *bench) benchOverhead() error {
	dir := filepath.Join(b.dir, "overhead")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	truePath, err := lookPath("true")
	if err != nil {
		return err
	}
	subjects := map[string][]string{"/bin/true": {truePath}}
	names := []string{"/bin/true"}
	if goInit, err := b.buildGoInit(); err != nil {
		b.note("init overhead: %v", err)
	} else {
		subjects[goInitName] = []string{goInit, "--", truePath}
		names = append(names, goInitName)
	}
	for _, name := range b.inits() {
		argv, err := b.initArgv(name, dir, truePath)
		if err != nil {
			b.note("init overhead, %s: %v", name, err)
			continue
		}
		subjects[name] = argv
		names = append(names, name)
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{null.Fd(), null.Fd(), null.Fd()}}
	b.res.overhead = make(map[string][]float64)
	failed := make(map[string]bool)
	for i := range overheadRuns * b.rounds {
		for _, name := range rotate(names, i) {
			if failed[name] {
				continue
			}
			argv := subjects[name]
			t := time.Now()
			pid, err := syscall.ForkExec(argv[0], argv, attr)
			if err != nil {
				b.note("init overhead, %s: %v", name, err)
				failed[name] = true
				continue
			}
			var ws syscall.WaitStatus
			for {
				if _, err := syscall.Wait4(pid, &ws, 0, nil); !errors.Is(err, syscall.EINTR) {
					break
				}
			}
			d := time.Since(t)
			if ws.ExitStatus() != 0 {
				b.note("init overhead, %s: %s exited with %v", name, words(argv), ws)
				failed[name] = true
				continue
			}
			b.res.overhead[name] = append(b.res.overhead[name], ms(d))
		}
	}
	for _, name := range names {
		b.logf("   %-10s %6.2f ms", name, median(b.res.overhead[name]))
	}
	return nil
}

// idleSubjects are the programs whose size and idle memory are compared:
// the binaries that make each up, and how to run it with nothing to do.
type idleSubject struct {
	name  string
	bins  []string // programs that make it up (for the size)
	argv  func(dir string) ([]string, error)
	extra string // about the size
}

// benchIdle records binary sizes and the memory of each program idle:
// an init with a sleeping command, a supervisor with no service, an
// inetd with one service and no connection.
func (b *bench) benchIdle() error {
	sleeping := []string{b.sleep, sleepArg}
	initIdle := func(name string) func(string) ([]string, error) {
		return func(dir string) ([]string, error) { return b.initArgv(name, dir, sleeping...) }
	}
	subjects := []idleSubject{
		{name: "metad", bins: []string{b.metad}, argv: func(dir string) ([]string, error) {
			sup, err := b.superviseMetad(dir, nil, "")
			if err != nil {
				return nil, err
			}
			return sup.argv, nil
		}, extra: "also metac (a symlink) and the listener shim: one file for every role"},
		{name: "tini", bins: []string{"tini"}, argv: initIdle("tini")},
		{name: "tini-static", bins: []string{"tini-static"}, extra: "tini linked statically, as containers without libc use it"},
		{name: "catatonit", bins: []string{"catatonit"}, argv: initIdle("catatonit")},
		{name: "dumb-init", bins: []string{"dumb-init"}, argv: initIdle("dumb-init")},
		{name: "tcpserver", bins: []string{"tcpserver"}, argv: func(string) ([]string, error) {
			p, err := lookPath("tcpserver")
			if err != nil {
				return nil, err
			}
			port, err := freePort()
			return []string{p, "-RHl0", "127.0.0.1", fmt.Sprint(port), b.tiny}, err
		}},
		{name: "xinetd", bins: []string{"xinetd"}, argv: func(dir string) ([]string, error) {
			servers, err := b.streamServersIn(dir, []string{b.tiny})
			if err != nil {
				return nil, err
			}
			for _, s := range servers {
				if s.name == "xinetd" {
					return s.argv, nil
				}
			}
			return nil, errors.New("no xinetd config")
		}},
		{name: "s6", bins: []string{"s6-svscan", "s6-supervise"}, argv: func(dir string) ([]string, error) {
			sup, err := superviseS6(dir, nil)
			if err != nil {
				return nil, err
			}
			return sup.argv, nil
		}, extra: "with s6-svstat, s6-svc...: the s6 package"},
		{name: "runit", bins: []string{"runsvdir", "runsv"}, argv: func(dir string) ([]string, error) {
			sup, err := superviseRunit(dir, nil)
			if err != nil {
				return nil, err
			}
			return sup.argv, nil
		}, extra: "with sv"},
		{name: "supervisord", bins: []string{"supervisord"}, argv: func(dir string) ([]string, error) {
			sup, err := superviseSupervisord(dir, nil, false)
			if err != nil {
				return nil, err
			}
			return sup.argv, nil
		}, extra: "a Python script: needs python3 and the supervisor package"},
	}
	for _, is := range subjects {
		row := idleRow{name: is.name, extra: is.extra}
		for _, bin := range is.bins {
			p := bin
			if !filepath.IsAbs(p) {
				var err error
				if p, err = lookPath(bin); err != nil {
					row.err = err
					break
				}
			}
			fi, err := os.Stat(p)
			if err != nil {
				row.err = err
				break
			}
			row.size += fi.Size()
			row.linking = linking(p)
		}
		if is.argv != nil && row.err == nil {
			row.mem, row.err = b.idleMemory(is)
		}
		if row.err != nil {
			b.note("size and idle memory, %s: %v", is.name, row.err)
		}
		b.res.idle = append(b.res.idle, row)
		b.logf("   %-12s %8d bytes  %s  PSS %d KiB  RSS %d KiB", row.name, row.size, row.linking, row.mem.pss, row.mem.rss)
	}
	return nil
}

// idleRow is one program's size and idle memory.
type idleRow struct {
	name    string
	size    int64
	linking string
	mem     memory
	extra   string
	err     error
}

// idleMemory starts the subject, lets it settle and measures its own
// process (not its command or services).
func (b *bench) idleMemory(is idleSubject) (memory, error) {
	dir := filepath.Join(b.dir, "idle-"+is.name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return memory{}, err
	}
	defer os.RemoveAll(dir)
	argv, err := is.argv(dir)
	if err != nil {
		return memory{}, err
	}
	s, err := b.start("idle-"+is.name, argv, os.Environ())
	if err != nil {
		return memory{}, err
	}
	defer s.stop()
	pid, err := s.main()
	if err != nil {
		return memory{}, err
	}
	time.Sleep(time.Second)
	return memoryOf([]int{pid})
}

// linking says whether an executable is static, dynamic, or a script.
func linking(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		b, _ := os.ReadFile(path)
		if strings.HasPrefix(string(b), "#!") {
			return "script"
		}
		return "?"
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "dynamic"
		}
	}
	return "static"
}
