package supervise

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
)

// The model test drives a supervisor with random operations under
// testing/synctest, with fake processes and fake stream sockets, and
// checks its invariants after every step. A failure prints the seed and
// the operations that led to it; run one seed again with
//
//	go test ./supervise -run TestModel -args -seed N [-steps N]
//
// or METAD_MODEL_SEED=N.
var (
	modelSeed  = flag.Uint64("seed", 0, "TestModel: run this seed only (0: the fixed seeds)")
	modelSteps = flag.Int("steps", 3000, "TestModel: operations per seed")
)

func TestModel(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6}
	if s, err := strconv.ParseUint(os.Getenv("METAD_MODEL_SEED"), 10, 64); err == nil {
		seeds = []uint64{s}
	}
	if *modelSeed != 0 {
		seeds = []uint64{*modelSeed}
	}
	for _, seed := range seeds {
		t.Run("seed="+strconv.FormatUint(seed, 10), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runModel(t, seed, *modelSteps) })
		})
	}
}

// modelStop is the stop timeout of the model's supervisors.
const modelStop = 10 * time.Second

// model is one run: the supervisor under test, its fakes, the config it
// was last given and the operations so far.
type model struct {
	t        *testing.T
	seed     uint64
	rng      *rand.Rand
	f        *fakeProcs
	fs       *fakeSockets
	s        *Supervisor
	confs    []conffmt.Service
	ops      []string
	stubborn map[int]bool   // pids that ignore their stop signal
	ceiling  map[string]int // most slots a stream may use: max, or more after a shrinking reload
	cgroups  bool           // each service has a cgroup; instances leave setsid'd strays too

	// The dependant r: after=d needs=d, ready=tcp: and check=tcp: by a
	// fake probe that succeeds while healthy is set, retries=4.
	healthy  atomic.Bool
	manual   atomic.Bool  // a control request is under way: r may start whatever d's state
	stopping atomic.Bool  // shutdown is under way
	broken   atomic.Value // string: an invariant broken inside a fake, found by check
	failedR  int          // r's tries when it was last seen failed; -1 when it was not
}

func runModel(t *testing.T, seed uint64, steps int) {
	m := &model{
		t:        t,
		seed:     seed,
		rng:      rand.New(rand.NewPCG(seed, 0x6d65746164)),
		f:        newFakeProcs(),
		fs:       newFakeSockets(),
		stubborn: make(map[int]bool),
		ceiling:  make(map[string]int),
		cgroups:  seed%2 == 0,
	}
	d := daemon("d", 1, 2)
	d.Period = 40 * time.Second
	d.Backoff = 30 * time.Second
	p := daemon("p", 0, 1)
	p.Period = time.Hour
	d.StopTimeout = 3 * time.Second
	st := streamService("s", 7000, 3)
	st.Backoff = 20 * time.Second
	r := daemon("r", 1, 1)
	r.After, r.Needs, r.Retries = []string{"d"}, []string{"d"}, 4
	r.Ready = conffmt.Ready{Kind: conffmt.ReadyTCP, Probe: conffmt.Probe{Kind: conffmt.ProbeTCP, Text: "tcp:80"}}
	r.ReadyTimeout = 30 * time.Second
	r.Check, r.CheckEvery, r.CheckTimeout, r.CheckFails = r.Ready.Probe, 10*time.Second, 5*time.Second, 3
	m.confs = []conffmt.Service{d, p, st, r}
	m.failedR = -1
	m.broken.Store("")
	m.healthy.Store(true)
	for i := range m.confs {
		m.confs[i].Argv0 = m.confs[i].Name // tells the services' spawns apart
	}
	m.s = m.newSupervisor()
	if err := m.s.Load(m.confs); err != nil {
		t.Fatal(err)
	}
	for _, c := range m.confs {
		m.ceiling[c.Name] = c.Max
	}
	synctest.Wait()
	m.check()
	for range steps {
		m.step()
		synctest.Wait()
		m.check()
	}
	m.shutdown()
}

func (m *model) newSupervisor() *Supervisor {
	s, err := New(Config{Log: zerolog.Nop(), Procs: m.f, Signal: m.signal, StopTimeout: modelStop, Env: []string{}, Custody: m.f, Probe: m.probe})
	if err != nil {
		m.t.Fatal(err)
	}
	s.sockets = m.fs
	m.f.spawned = func(name string) { m.spawned(s, name) }
	if m.cgroups {
		groups := &fakeGroups{groups: make(map[string]*fakeGroup)}
		for _, c := range m.confs {
			groups.groups[c.Name] = &fakeGroup{f: m.f, service: c.Name, signal: m.signal}
		}
		s.groups = groups
	}
	return s
}

// probe is the fake readiness probe of r.
func (m *model) probe(ctx context.Context, p conffmt.Probe, proc initsys.Proc) error {
	if m.healthy.Load() {
		return nil
	}
	return errors.New("connection refused")
}

// spawned checks, as r is started, that it is started by a control
// request or with d ready (after=), and never during shutdown.
func (m *model) spawned(s *Supervisor, name string) {
	if m.stopping.Load() {
		m.broken.Store(name + " started during shutdown")
	}
	if name != "r" || m.manual.Load() {
		return
	}
	s.deps.mu.Lock()
	d := s.deps.pub["d"]
	s.deps.mu.Unlock()
	if !d.ready {
		m.broken.Store(fmt.Sprintf("r started automatically while d is %s", d.state))
	}
}

// signal is the fakes' kill(2): a process ends of any signal but its
// stop signal when stubborn, and of SIGKILL always; signal 0 does nothing.
func (m *model) signal(pid int, sig syscall.Signal) error {
	m.f.mu.Lock()
	m.f.signals = append(m.f.signals, sent{pid, sig})
	_, alive := m.f.running[abs(pid)]
	stubborn := m.stubborn[abs(pid)]
	if alive && m.stopping.Load() && sig == syscall.SIGTERM && m.f.owner[abs(pid)] == "d" {
		for p := range m.f.running {
			if m.f.owner[p] == "r" {
				m.broken.Store(fmt.Sprintf("shutdown: d's pid %d asked to stop while r's pid %d runs", abs(pid), p))
			}
		}
	}
	m.f.mu.Unlock()
	if !alive {
		return syscall.ESRCH
	}
	if sig == 0 || (stubborn && sig != syscall.SIGKILL) {
		return nil
	}
	go m.f.end(abs(pid), unix.WaitStatus(sig))
	return nil
}

func abs(x int) int { return max(x, -x) }

func streamService(name string, port, max int) conffmt.Service {
	c := daemon(name, 0, max)
	c.Class, c.Port, c.Addr, c.Backlog = conffmt.Stream, port, netip.MustParseAddr("127.0.0.1"), 16
	return c
}

// fail ends the test with the seed and the operations that led here.
func (m *model) fail(format string, args ...any) {
	m.t.Helper()
	ops := m.ops
	const shown = 400
	if len(ops) > shown {
		ops = ops[len(ops)-shown:]
	}
	m.t.Errorf("seed %d, after %d operations: %s\nrun again: go test ./supervise -run TestModel -args -seed %d\nlast operations:\n  %s",
		m.seed, len(m.ops), fmt.Sprintf(format, args...), m.seed, strings.Join(ops, "\n  "))
	// End everything so that the bubble can end: what is left would
	// only bury the message under goroutine dumps.
	for _, pid := range m.f.pids() {
		m.f.end(pid, unix.WaitStatus(syscall.SIGKILL))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	m.s.Shutdown(ctx)
	m.t.FailNow()
}

func (m *model) op(format string, args ...any) {
	m.ops = append(m.ops, time.Now().UTC().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
}

// pick returns a random element of xs; xs must not be empty.
func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func (m *model) names() []string {
	var out []string
	for _, c := range m.confs {
		out = append(out, c.Name)
	}
	return out
}

// instances returns the pids of every instance the supervisor lists.
func (m *model) instances() []int {
	st, err := m.s.List()
	if err != nil {
		m.fail("list: %v", err)
	}
	var pids []int
	for _, x := range st {
		for _, in := range x.Instances {
			pids = append(pids, in.PID)
		}
	}
	return pids
}

var clients = []netip.Addr{
	netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"),
	netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4"),
}

// step does one random operation.
func (m *model) step() {
	r := m.rng
	switch n := r.IntN(100); {
	case n < 20:
		port := m.streamPort()
		if r.IntN(10) == 0 {
			port = 7000 + 7001 - port // the port the stream does not use now
		}
		addr := pick(r, clients)
		ok := m.fs.connect(port, addr)
		m.op("connect %v -> :%d (accepted by the socket: %v)", addr, port, ok)
	case n < 40:
		pids := m.instances()
		if len(pids) == 0 {
			return
		}
		pid := pick(r, pids)
		how := pick(r, []struct {
			name string
			ws   unix.WaitStatus
		}{{"crash", exitCode(1)}, {"clean exit", exitCode(0)}, {"SIGPIPE", unix.WaitStatus(syscall.SIGPIPE)}, {"exit 141", exitCode(141)}, {"segv", unix.WaitStatus(syscall.SIGSEGV)}})
		m.op("pid %d: %s", pid, how.name)
		m.f.end(pid, how.ws)
	case n < 45:
		pids := m.instances()
		if len(pids) == 0 {
			return
		}
		pid := pick(r, pids)
		how, left := "in its session", 0
		if m.cgroups && r.IntN(2) == 0 {
			how, left = "in a session of its own", m.f.stray(pid)
		} else {
			left = m.f.leave(pid)
		}
		if r.IntN(3) == 0 {
			m.stubborn[left] = true
		}
		m.op("pid %d leaves pid %d behind %s (stubborn %v)", pid, left, how, m.stubborn[left])
	case n < 48:
		pids := m.instances()
		if len(pids) == 0 {
			return
		}
		pid := pick(r, pids)
		m.stubborn[pid] = true
		m.op("pid %d ignores its stop signal", pid)
	case n < 65:
		d := pick(r, []time.Duration{time.Millisecond, 300 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 11 * time.Second, time.Minute, 7 * time.Minute})
		m.op("sleep %v", d)
		time.Sleep(d)
	case n < 80:
		m.control()
	case n < 88:
		m.reload()
	case n < 93:
		m.checkSchedule()
	case n < 96:
		m.reexec()
	case n < 98:
		m.healthy.Store(!m.healthy.Load())
		m.op("r's probe now succeeds: %v", m.healthy.Load())
	default:
		name := pick(r, m.names())
		m.op("kill %s HUP", name)
		if err := m.s.Kill(name, syscall.SIGHUP); err != nil {
			m.fail("kill: %v", err)
		}
	}
}

func (m *model) streamName() string {
	for _, c := range m.confs {
		if c.Class == conffmt.Stream {
			return c.Name
		}
	}
	return ""
}

func (m *model) streamPort() int {
	for _, c := range m.confs {
		if c.Class == conffmt.Stream {
			return c.Port
		}
	}
	return 0
}

// control sends one control request.
func (m *model) control() {
	r := m.rng
	name := pick(r, m.names())
	var err error
	m.manual.Store(true)
	defer m.manual.Store(false)
	switch op := pick(r, []string{"start", "stop", "restart", "enable", "disable", "enable", "enable"}); op {
	case "start":
		err = m.s.Start(name)
		if err != nil && (errors.Is(err, ErrAtMax) || strings.Contains(err.Error(), "stream") || strings.Contains(err.Error(), "still being stopped")) {
			err = nil
		}
		m.op("start %s", name)
	case "stop":
		err = m.s.Stop(name)
		m.op("stop %s", name)
	case "restart":
		err = m.s.Restart(name)
		m.op("restart %s", name)
	case "enable":
		err = m.s.Enable(name)
		m.op("enable %s", name)
	case "disable":
		err = m.s.Disable(name)
		m.op("disable %s", name)
	}
	if err != nil {
		m.fail("%s: %v", m.ops[len(m.ops)-1], err)
	}
}

// reload changes one setting of one service and reloads.
func (m *model) reload() {
	r := m.rng
	i := r.IntN(len(m.confs))
	c := m.confs[i]
	var what string
	switch r.IntN(4) {
	case 0:
		c.Max = 1 + r.IntN(4)
		if c.Class == conffmt.Daemon {
			c.Min = min(c.Min, c.Max)
		}
		what = "max=" + strconv.Itoa(c.Max)
	case 1:
		c.Backoff = pick(r, []time.Duration{5 * time.Second, 20 * time.Second, time.Minute})
		what = "backoff=" + c.Backoff.String()
	case 2:
		c.Args = []string{strconv.Itoa(r.IntN(3))}
		what = "args " + c.Args[0]
	default:
		if c.Class == conffmt.Stream {
			c.Port = 7000 + 7001 - c.Port
			what = "port=" + strconv.Itoa(c.Port)
		} else {
			c.Period = pick(r, []time.Duration{0, 30 * time.Second, time.Hour})
			what = "period=" + c.Period.String()
		}
	}
	m.confs = slices.Clone(m.confs)
	m.confs[i] = c
	if c.Class == conffmt.Stream {
		st := m.inspect(c.Name)
		m.ceiling[c.Name] = max(c.Max, st.used)
	}
	m.op("reload %s %s", c.Name, what)
	d := m.s.Reload(m.confs)
	if len(d.Added)+len(d.Removed) != 0 {
		m.fail("reload: got %+v, want only changes", d)
	}
}

// inspection is a service's internals as the invariants need them.
type inspection struct {
	class     conffmt.Class
	instances int
	held      int
	used      int
	max       int
	killing   bool // an instance has been asked to stop and has not ended, or is not ready yet (its ready timeout may stop it)
	custody   []int
	next      time.Time
	plan      plan
}

func (m *model) inspect(name string) inspection {
	svcs, err := m.s.lookup([]string{name}, false)
	if err != nil {
		m.fail("lookup: %v", err)
	}
	sv := svcs[0]
	in, err := ask(sv, time.Minute, func(now time.Time) inspection {
		in := inspection{class: sv.conf.Class, instances: len(sv.instances), max: sv.conf.Max, custody: sv.custody.pids(), plan: sv.plan()}
		if s, ok := sv.cls.(*streamClass); ok {
			in.held = len(s.held)
		}
		in.used = in.instances + in.held
		for _, inst := range sv.instances {
			in.killing = in.killing || inst.asked || !inst.ready || sv.conf.Check.Kind != conffmt.ProbeNone
		}
		if at, why := next(in.plan, now); why != noStart {
			in.next = at
		}
		return in
	})
	if err != nil {
		m.fail("inspect %s: %v", name, err)
	}
	return in
}

// check verifies the invariants.
func (m *model) check() {
	st, err := m.s.List()
	if err != nil {
		m.fail("list: %v", err)
	}
	if len(st) != len(m.confs) {
		m.fail("list: got %d services, want %d", len(st), len(m.confs))
	}
	listed := map[int]bool{}
	inCustody := map[int]bool{}
	for i, x := range st {
		if x.Name != m.confs[i].Name {
			m.fail("list order: got %s at %d, want %s", x.Name, i, m.confs[i].Name)
		}
		in := m.inspect(x.Name)
		if in.instances < 0 || in.held < 0 {
			m.fail("%s: negative count: %+v", x.Name, in)
		}
		if in.used <= in.max {
			m.ceiling[x.Name] = in.max
		}
		if in.class == conffmt.Stream && in.used > m.ceiling[x.Name] {
			m.fail("%s: %d slots in use (%d instances, %d held), more than max %d", x.Name, in.used, in.instances, in.held, m.ceiling[x.Name])
		}
		if x.Held != in.held {
			m.fail("%s: status says %d held slots, the service has %d", x.Name, x.Held, in.held)
		}
		if !x.NextStart.IsZero() && !x.NextStart.Equal(in.next) {
			m.fail("%s: status says next start %v, the schedule %v", x.Name, x.NextStart, in.next)
		}
		if !slices.Contains(States(), x.State) {
			m.fail("%s: state %q is not one of %v", x.Name, x.State, States())
		}
		if x.Class == conffmt.Daemon && x.Ready != (x.State == "ready") {
			m.fail("%s: ready %v in state %s", x.Name, x.Ready, x.State)
		}
		if x.State == "ready" && len(x.Instances) == 0 {
			m.fail("%s: ready with no instance", x.Name)
		}
		if x.Name == "r" {
			m.checkFailed(x)
		}
		for _, inst := range x.Instances {
			listed[inst.PID] = true
		}
		for _, pid := range x.Custody {
			inCustody[pid] = true
		}
	}
	if msg := m.checkProcs(listed, inCustody); msg != "" {
		m.fail("%s", msg)
	}
	if msg := m.broken.Load().(string); msg != "" {
		m.fail("%s", msg)
	}
}

// checkFailed checks that a failed r starts nothing by itself: only a
// control request or a reload tries it again.
func (m *model) checkFailed(x Status) {
	tries := len(m.tries("r"))
	last := ""
	if len(m.ops) > 0 {
		last = m.ops[len(m.ops)-1]
	}
	again := strings.Contains(last, "start r") || strings.Contains(last, "enable r") || strings.HasPrefix(last[min(len(last), 13):], "reload")
	if m.failedR >= 0 && tries > m.failedR && !again {
		m.fail("r: failed, yet started again after %q", last)
	}
	m.failedR = -1
	if x.State == "failed" {
		m.failedR = tries
	}
}

// checkProcs compares the fake processes with what the services list.
func (m *model) checkProcs(listed, inCustody map[int]bool) string {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	leftovers := map[int]bool{}
	for sid, pids := range m.f.sessions {
		for _, pid := range pids {
			leftovers[pid] = true
			if _, alive := m.f.running[sid]; !alive && !inCustody[pid] {
				return fmt.Sprintf("pid %d, left by ended pid %d, is not in custody", pid, sid)
			}
		}
	}
	running := map[string]bool{} // services with an instance
	for pid := range listed {
		running[m.f.owner[pid]] = true
	}
	for pid := range m.f.running {
		if listed[pid] || leftovers[pid] {
			continue
		}
		svc := m.f.owner[pid]
		if !m.cgroups || svc == "" {
			return fmt.Sprintf("pid %d runs but is no instance of any service", pid)
		}
		// A stray: once no instance of a daemon runs, it is in custody
		// (a stream's are looked for once per rescan period).
		if svc != m.streamName() && !running[svc] && !inCustody[pid] {
			return fmt.Sprintf("pid %d, a stray of %s, is not in custody with no instance running", pid, svc)
		}
	}
	for pid := range listed {
		if _, ok := m.f.running[pid]; !ok {
			return fmt.Sprintf("pid %d is listed but has ended", pid)
		}
	}
	return ""
}

// checkSchedule sleeps until the next start status shows for a daemon,
// and checks that it came then: not later, and not earlier unless an
// instance being stopped ended meanwhile.
func (m *model) checkSchedule() {
	var name string
	var at time.Time
	for _, c := range m.confs {
		if c.Class != conffmt.Daemon {
			continue
		}
		in := m.inspect(c.Name)
		st, _ := m.s.List(c.Name)
		if st[0].NextStart.IsZero() || in.killing {
			continue
		}
		name, at = c.Name, st[0].NextStart
		break
	}
	if name == "" {
		return
	}
	m.op("wait for %s's next start at %v", name, at.UTC().Format("15:04:05.000"))
	tries := len(m.tries(name))
	time.Sleep(time.Until(at))
	synctest.Wait()
	got := m.tries(name)[tries:]
	if len(got) == 0 {
		if in := m.inspect(name); in.plan.active && !in.plan.custody {
			m.fail("%s: status said next start at %v; none came", name, at)
		}
		return
	}
	if got[0].Before(at) {
		st, _ := m.s.List(name)
		m.fail("%s: status said next start at %v; one came at %v (now %+v)", name, at.UTC().Format("15:04:05.000"), got[0].UTC().Format("15:04:05.000"), st)
	}
}

// tries returns when the service tried to start an instance.
func (m *model) tries(name string) []time.Time {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	var out []time.Time
	for i, t := range m.f.tries {
		if m.f.tried[i] == name {
			out = append(out, t)
		}
	}
	return out
}

// reexec hands the services over to a new supervisor, as a re-exec does,
// and checks that they are the same there.
func (m *model) reexec() {
	before, _ := m.s.List()
	if m.rng.IntN(3) == 0 {
		m.op("re-exec that fails")
		_, resume, err := m.s.Handover(func() func() { return func() {} })
		if err != nil {
			m.fail("handover: %v", err)
		}
		resume()
		synctest.Wait()
		m.sameAfter(before)
		return
	}
	m.op("re-exec")
	st, h, _, err := m.s.handover(func() func() { return func() {} })
	if err != nil {
		m.fail("handover: %v", err)
	}
	next := m.newSupervisor()
	if err := next.Restore(st); err != nil {
		m.fail("restore: %v", err)
	}
	h.abandon = true
	close(h.release)
	m.s = next
	synctest.Wait()
	m.sameAfter(before)
}

// sameAfter checks that a re-exec left the services as they were.
func (m *model) sameAfter(before []Status) {
	after, _ := m.s.List()
	for i := range before {
		b, a := before[i], after[i]
		// A starting instance is tried again at once by the new image,
		// and may be ready there.
		same := b.State == a.State && b.Ready == a.Ready || b.State == "starting"
		if b.Name != a.Name || b.Enabled != a.Enabled || b.Crashes != a.Crashes || b.Restarts != a.Restarts || b.Held != a.Held ||
			!same || b.Unhealthy != a.Unhealthy || b.Refused != a.Refused {
			m.fail("re-exec changed %s: got %+v, want %+v", b.Name, a, b)
		}
	}
}

// shutdown shuts down, then checks that nothing runs, that it took no
// longer than its bound, and that the supervisor is closed.
func (m *model) shutdown() {
	// r runs, so that the order of the shutdown is seen.
	m.op("enable d r, start r, then shutdown")
	m.manual.Store(true)
	if err := m.s.Enable("d", "r"); err != nil {
		m.fail("enable: %v", err)
	}
	if err := m.s.Start("r"); err != nil && !errors.Is(err, ErrAtMax) && !strings.Contains(err.Error(), "still being stopped") {
		m.fail("start r: %v", err)
	}
	m.manual.Store(false)
	synctest.Wait()
	st, _ := m.s.List("r")
	m.f.mu.Lock()
	for _, in := range st[0].Instances {
		m.stubborn[in.PID] = true // r takes its whole stop timeout: d must wait for it
	}
	m.f.mu.Unlock()
	bound := m.s.StopBound()
	if want := modelStop + 3*time.Second; bound != want { // r (10s) stops before d (3s)
		m.fail("stop bound: got %v, want %v", bound, want)
	}
	m.stopping.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), bound+time.Second)
	defer cancel()
	t0 := time.Now()
	if err := m.s.Shutdown(ctx); err != nil {
		m.fail("shutdown: %v", err)
	}
	if d := time.Since(t0); d > bound {
		m.fail("shutdown took %v, want at most %v", d, bound)
	}
	if msg := m.broken.Load().(string); msg != "" {
		m.fail("%s", msg)
	}
	synctest.Wait()
	if pids := m.f.pids(); len(pids) != 0 {
		m.fail("after shutdown, still running: %v", pids)
	}
	for _, err := range []error{m.s.Start("d"), m.s.Enable("d"), m.s.Restart("d"), m.s.Load([]conffmt.Service{daemon("x", 1, 1)})} {
		if !errors.Is(err, ErrClosed) {
			m.fail("after shutdown: got %v, want ErrClosed", err)
		}
	}
	if d := m.s.Reload(append(m.confs, daemon("x", 1, 1))); len(d.Added) != 0 {
		m.fail("reload after shutdown added %v", d.Added)
	}
}

// fakeSockets stands in for the stream sockets: one queue of
// connections per port, shared by every open descriptor of it.
type fakeSockets struct {
	mu     sync.Mutex
	nextFD int
	byFD   map[int]*fakeSocket
	queues map[int]*fakeQueue
}

type fakeQueue struct {
	port  int
	conns []conn
	refs  int
	ready chan struct{} // one slot: a connection was queued
}

type fakeSocket struct {
	fs     *fakeSockets
	q      *fakeQueue
	closed chan struct{}
	once   sync.Once
}

func newFakeSockets() *fakeSockets {
	return &fakeSockets{nextFD: 100000, byFD: make(map[int]*fakeSocket), queues: make(map[int]*fakeQueue)}
}

func (fs *fakeSockets) open(e Endpoint, _ int) (streamSocket, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	q := fs.queues[e.Port]
	if q == nil {
		q = &fakeQueue{port: e.Port, ready: make(chan struct{}, 1)}
		fs.queues[e.Port] = q
	}
	return fs.socket(q), nil
}

// socket returns a new descriptor of q. fs.mu must be held.
func (fs *fakeSockets) socket(q *fakeQueue) *fakeSocket {
	q.refs++
	return &fakeSocket{fs: fs, q: q, closed: make(chan struct{})}
}

func (fs *fakeSockets) take(fd int, e Endpoint) (streamSocket, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	s, ok := fs.byFD[fd]
	if !ok {
		return nil, fmt.Errorf("no fake socket %d", fd)
	}
	delete(fs.byFD, fd)
	return s, nil
}

// connect queues a connection from addr on port; false when no socket
// is open there (refused).
func (fs *fakeSockets) connect(port int, addr netip.Addr) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	q := fs.queues[port]
	if q == nil || q.refs == 0 {
		return false
	}
	q.conns = append(q.conns, conn{fd: -1, remote: remote{addr: addr, port: 40000}})
	nudge(q.ready)
	return true
}

func (s *fakeSocket) accept() (conn, error) {
	s.fs.mu.Lock()
	defer s.fs.mu.Unlock()
	if len(s.q.conns) == 0 {
		return conn{}, errNoConn
	}
	c := s.q.conns[0]
	s.q.conns = s.q.conns[1:]
	return c, nil
}

func (s *fakeSocket) wait(stop <-chan struct{}) error {
	for {
		s.fs.mu.Lock()
		n := len(s.q.conns)
		s.fs.mu.Unlock()
		if n > 0 {
			return nil
		}
		select {
		case <-s.q.ready:
		case <-stop:
			return nil
		case <-s.closed:
			return os.ErrClosed
		}
	}
}

func (s *fakeSocket) dup() (int, error) {
	s.fs.mu.Lock()
	defer s.fs.mu.Unlock()
	s.fs.nextFD++
	s.fs.byFD[s.fs.nextFD] = s.fs.socket(s.q)
	return s.fs.nextFD, nil
}

func (s *fakeSocket) close() error {
	s.once.Do(func() {
		close(s.closed)
		s.fs.mu.Lock()
		defer s.fs.mu.Unlock()
		if s.q.refs--; s.q.refs == 0 {
			s.q.conns = nil // refused
		}
	})
	return nil
}

var _ = initsys.Exit{}
