package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
	"metad/supervise"
)

// fakeSup is a Supervisor that records what it is asked. Its Shutdown
// does what shutdown says (nil: return at once).
type fakeSup struct {
	mu       sync.Mutex
	calls    []string
	shutdown func(ctx context.Context) error
	resumed  int // Handover's resume calls
}

func (f *fakeSup) record(call string) {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mu.Unlock()
}

// called returns the calls made, in order.
func (f *fakeSup) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeSup) has(call string) bool {
	for _, c := range f.called() {
		if c == call {
			return true
		}
	}
	return false
}

func (f *fakeSup) List(names ...string) ([]supervise.Status, error) {
	f.record("list")
	return nil, nil
}
func (f *fakeSup) Enable(names ...string) error               { f.record("enable"); return nil }
func (f *fakeSup) Disable(names ...string) error              { f.record("disable"); return nil }
func (f *fakeSup) Start(name string) error                    { f.record("start"); return nil }
func (f *fakeSup) Stop(names ...string) error                 { f.record("stop"); return nil }
func (f *fakeSup) Restart(names ...string) error              { f.record("restart"); return nil }
func (f *fakeSup) Kill(name string, sig syscall.Signal) error { f.record("kill"); return nil }
func (f *fakeSup) Load(svcs []conffmt.Service) error          { f.record("load"); return nil }
func (f *fakeSup) Restore(st *supervise.State) error          { f.record("restore"); return nil }

func (f *fakeSup) Reload(svcs []conffmt.Service) supervise.Diff {
	f.record("reload")
	return supervise.Diff{Added: []string{"new"}}
}

func (f *fakeSup) Handover(pause func() func()) (*supervise.State, func(), error) {
	f.record("handover")
	resumeReaper := pause()
	st := &supervise.State{Version: supervise.StateVersion, Services: []supervise.ServiceState{
		{Config: "web stream port=7000 /bin/cat", Path: "/bin/cat", Socket: devNull(), Instances: []supervise.InstanceState{{PID: 77}}},
	}}
	return st, func() {
		f.mu.Lock()
		f.resumed++
		f.mu.Unlock()
		resumeReaper()
	}, nil
}

func (f *fakeSup) Shutdown(ctx context.Context) error {
	f.record("shutdown")
	if f.shutdown != nil {
		return f.shutdown(ctx)
	}
	return nil
}

// devNull returns a new descriptor of /dev/null: something real to hand
// over, closed by whoever takes it.
func devNull() int {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY, 0)
	if err != nil {
		panic(err)
	}
	return fd
}

// fakeProcs is the reaper: Spawn and Adopt keep the exit callback, which
// the test calls to end the process.
type fakeProcs struct {
	mu      sync.Mutex
	done    func(initsys.Exit)
	spawned []*initsys.Proc
	paused  int
}

const commandPID = 4242

func (f *fakeProcs) Spawn(p *initsys.Proc, done func(initsys.Exit)) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.spawned, f.done = append(f.spawned, p), done
	return commandPID, nil
}

func (f *fakeProcs) Adopt(pid int, done func(initsys.Exit)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.done = done
	return nil
}

func (f *fakeProcs) Pause() func() {
	f.mu.Lock()
	f.paused++
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		f.paused--
		f.mu.Unlock()
	}
}

// exit ends the process spawned or adopted last with status code.
func (f *fakeProcs) exit(code int) {
	f.mu.Lock()
	done := f.done
	f.mu.Unlock()
	if done == nil {
		panic("no process was spawned or adopted")
	}
	done(initsys.Exit{PID: commandPID, Status: unix.WaitStatus(code << 8)})
}

// fakeServer is a control server; it records its quiesces in sup's calls,
// to check their order against the supervisor's.
type fakeServer struct {
	name      string
	sup       *fakeSup
	resumed   int
	quiescing func() // called by Quiesce, if set: what happens meanwhile
}

func (s *fakeServer) Quiesce(ctx context.Context) (func(), error) {
	s.sup.record("quiesce " + s.name)
	if s.quiescing != nil {
		s.quiescing()
	}
	return func() {
		s.sup.mu.Lock()
		s.resumed++
		s.sup.mu.Unlock()
	}, nil
}

func (s *fakeServer) Dup() (int, error) { return devNull(), nil }

// logs is a log that tests read back, safe for concurrent use.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// events returns the log's events whose message starts with msg.
func (l *logs) events(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		if m, _ := ev["message"].(string); strings.HasPrefix(m, msg) {
			out = append(out, ev)
		}
	}
	return out
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// rig is a Daemon wired to fakes.
type rig struct {
	d       *Daemon
	sup     *fakeSup
	procs   *fakeProcs
	local   *fakeServer
	network *fakeServer
	sigs    chan os.Signal
	log     *logs
	badConf bool        // the config file has an error
	closing func()      // what closing control does, besides being recorded
	result  chan [2]int // Run's status and final
}

// newRig returns a Daemon on fakes, in config mode unless cmd is given.
func newRig(t *testing.T, cmd ...string) *rig {
	r := &rig{sup: &fakeSup{}, procs: &fakeProcs{}, sigs: make(chan os.Signal, 8), log: &logs{}, result: make(chan [2]int, 1)}
	r.local, r.network = &fakeServer{name: "local", sup: r.sup}, &fakeServer{name: "network", sup: r.sup}
	r.d = New(Config{
		Options: Options{Conf: "/etc/metad.conf", Command: cmd, StopTimeout: 10e9, Version: "test"},
		Log:     zerolog.New(r.log).Level(zerolog.DebugLevel), Exe: "/usr/sbin/metad",
		Signals: r.sigs, Procs: r.procs, Supervisor: r.sup, Stderr: r.log,
		Control: func(d *Daemon, fds ControlFDs) (Control, error) {
			r.sup.record("control")
			return Control{Local: r.local, Network: r.network, Close: func() {
				r.sup.record("close control")
				if r.closing != nil {
					r.closing()
				}
			}}, nil
		},
	})
	r.d.load = func(path string) ([]conffmt.Service, error) {
		r.sup.record("read " + path)
		if r.badConf {
			return nil, &os.PathError{Op: "open", Path: path, Err: syscall.EACCES}
		}
		return []conffmt.Service{{Name: "web"}}, nil
	}
	r.d.forward = func(pid int, sig syscall.Signal, group bool) error {
		if pid != commandPID {
			t.Errorf("forwarded %v to pid %d, want the command's %d", sig, pid, commandPID)
		}
		r.sup.record("forward " + sig.String())
		return nil
	}
	r.d.exec = func(path string, argv, env []string) error {
		t.Errorf("exec %s: not expected", path)
		return syscall.ENOEXEC
	}
	return r
}

// run starts Run; wait returns its result.
func (r *rig) run() {
	go func() {
		status, final := r.d.Run()
		r.result <- [2]int{status, int(final)}
	}()
}

func (r *rig) wait(t *testing.T) (int, initsys.Final) {
	t.Helper()
	res := <-r.result
	return res[0], initsys.Final(res[1])
}

func (f *fakeSup) Readiness() (enabled, ready, failed int) { return 0, 0, 0 }
func (f *fakeSup) StopBound() time.Duration                { return 0 }
