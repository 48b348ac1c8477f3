package supervise

import (
	"slices"
	"strings"
	"sync"
	"time"

	"metad/conffmt"
)

// Dependencies (SPEC §8) link services that each own their state. A
// service publishes what others need to know of it — ready, done, failed,
// enabled, nothing running — into the supervisor's table after every
// change, and pokes the services that depend on it and those it depends
// on. A poked service reads the table itself, in its own goroutine:
// nobody waits on anybody, and each entry has one writer.

// depState is what a service publishes for the others.
type depState struct {
	state    state
	ready    bool // ready, or done
	failed   bool // ended for good, unsuccessfully
	enabled  bool
	quitting bool
	idle     bool // nothing of it runs: no instance, nothing in custody
	gone     bool // its goroutine has ended
}

// depView is what a service last read of its dependencies.
type depView struct {
	wait string // why automatic starts wait: "waiting for db (starting)"; "" when none
	down string // a needed service that is down: this one is stopped; "" when none
}

// depTable is the published states and who depends on whom. Its lock is
// never held while anything else is waited for.
type depTable struct {
	mu         sync.Mutex
	pub        map[string]depState
	services   map[string]*service   // loaded by name
	dependants map[string][]*service // services whose after= names the key
	changed    func()                // Config.Changed; nil if none
}

func newDepTable(changed func()) *depTable {
	return &depTable{pub: make(map[string]depState), services: make(map[string]*service), dependants: make(map[string][]*service), changed: changed}
}

// add records a loaded service and what it depends on. The service's
// conf must not change without rewire.
func (t *depTable) add(sv *service) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.services[sv.conf.Name] = sv
	// What it is before its goroutine publishes: not ready yet.
	t.pub[sv.conf.Name] = depState{state: sv.state, enabled: sv.enabled}
	for _, d := range sv.conf.After {
		t.dependants[d] = append(t.dependants[d], sv)
	}
}

// rewire records that sv now depends on after instead of before.
func (t *depTable) rewire(sv *service, before, after []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, d := range before {
		t.dependants[d] = slices.DeleteFunc(t.dependants[d], func(x *service) bool { return x == sv })
	}
	for _, d := range after {
		t.dependants[d] = append(t.dependants[d], sv)
	}
}

// gone records that sv's goroutine has ended, forgets it unless another
// service of that name has taken its place, and pokes its neighbours.
func (t *depTable) gone(sv *service) {
	t.mu.Lock()
	name := sv.conf.Name
	if t.services[name] == sv {
		delete(t.services, name)
		st := t.pub[name]
		st.gone, st.idle, st.ready = true, true, false
		t.pub[name] = st
	}
	for _, d := range sv.conf.After {
		t.dependants[d] = slices.DeleteFunc(t.dependants[d], func(x *service) bool { return x == sv })
	}
	poke := t.neighbours(sv)
	t.mu.Unlock()
	t.poke(poke)
}

// publish stores sv's state and pokes its neighbours when it changed.
func (t *depTable) publish(sv *service, st depState) {
	t.mu.Lock()
	name := sv.conf.Name
	if t.services[name] != sv || t.pub[name] == st {
		t.mu.Unlock()
		return
	}
	t.pub[name] = st
	poke := t.neighbours(sv)
	t.mu.Unlock()
	t.poke(poke)
}

// neighbours returns the services that depend on sv and those sv depends
// on. t.mu must be held.
func (t *depTable) neighbours(sv *service) []*service {
	out := slices.Clone(t.dependants[sv.conf.Name])
	for _, d := range sv.conf.After {
		if x := t.services[d]; x != nil {
			out = append(out, x)
		}
	}
	return out
}

func (t *depTable) poke(svcs []*service) {
	for _, x := range svcs {
		x.events.put(event{kind: evDeps})
	}
	if t.changed != nil {
		t.changed()
	}
}

// view returns what sv's dependencies say: the first one not ready or
// done (after=), and the first needed one that is down (needs=).
func (t *depTable) view(sv *service) depView {
	t.mu.Lock()
	defer t.mu.Unlock()
	var v depView
	for _, d := range sv.conf.After {
		st, ok := t.pub[d]
		switch {
		case !ok:
			v.wait = "waiting for " + d
		case st.gone:
			v.wait = "waiting for " + d + " (not loaded)"
		case st.failed:
			v.wait = "waiting for a failed dependency: " + d
		case !st.ready:
			v.wait = "waiting for " + d + " (" + st.state.String() + ")"
		}
		if v.wait != "" {
			break
		}
	}
	for _, d := range sv.conf.Needs {
		st, ok := t.pub[d]
		if !ok || st.gone || st.failed || !st.enabled || st.quitting {
			v.down = d
			break
		}
	}
	return v
}

// holding returns the dependants of sv that still run something, which a
// shutdown stops before sv, joined for a reason; "" when none.
func (t *depTable) holding(sv *service) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	for _, x := range t.dependants[sv.conf.Name] {
		if st, ok := t.pub[x.conf.Name]; ok && !st.gone && !(st.quitting && st.idle) {
			names = append(names, x.conf.Name)
		}
	}
	slices.Sort(names)
	return strings.Join(slices.Compact(names), ", ")
}

// readiness counts the enabled services and those of them that are ready
// or done, and the failed ones, for metad's own readiness.
func (t *depTable) readiness() (enabled, ready, failed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range t.pub {
		if st.gone || !st.enabled {
			continue
		}
		enabled++
		if st.ready {
			ready++
		}
		if st.failed {
			failed++
		}
	}
	return enabled, ready, failed
}

// Readiness counts the enabled services, those of them that are ready or
// done, and the failed ones, as last published (metad's own readiness,
// SPEC §8).
func (s *Supervisor) Readiness() (enabled, ready, failed int) { return s.deps.readiness() }

// StopBound is how long a shutdown may take: the longest chain of
// dependencies, each service stopped after its dependants, each with its
// own stop timeout (SIGKILL then ends it at once).
func (s *Supervisor) StopBound() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	confs := make(map[string]*conffmt.Service, len(s.services))
	for name, sv := range s.services {
		confs[name] = &sv.conf
	}
	memo := make(map[string]time.Duration, len(confs))
	var chain func(name string, depth int) time.Duration
	chain = func(name string, depth int) time.Duration {
		if d, ok := memo[name]; ok {
			return d
		}
		c := confs[name]
		if c == nil || depth > len(confs) { // not loaded, or a cycle conffmt let through
			return 0
		}
		own := c.StopTimeout
		if own <= 0 {
			own = s.cfg.StopTimeout
		}
		var longest time.Duration
		for _, d := range c.After {
			longest = max(longest, chain(d, depth+1))
		}
		memo[name] = own + longest
		return own + longest
	}
	bound := s.cfg.StopTimeout
	for name := range confs {
		bound = max(bound, chain(name, 0))
	}
	return bound
}

// refreshDeps reads what the service's dependencies and dependants
// published: a needed service that went down stops this one's instances;
// at shutdown, dependants that have stopped let this one stop.
func (sv *service) refreshDeps(now time.Time) {
	v := sv.sup.deps.view(sv)
	if v.down != "" && sv.deps.down == "" && !sv.quitting && len(sv.instances) > 0 {
		sv.log.Info().Str("needs", v.down).Msg("a needed service is down: stopping")
		sv.stopInstances(now)
	}
	sv.deps = v
	if sv.quitting && sv.holding != "" {
		if sv.holding = sv.sup.deps.holding(sv); sv.holding == "" {
			sv.stopInstances(now)
		}
	}
}

// publish tells the services that depend on this one, those it depends
// on, and metad's readiness, where it stands.
func (sv *service) publish() {
	live := sv.plan().live
	sv.sup.deps.publish(sv, depState{
		state:    sv.state,
		ready:    sv.ready() || sv.state == stateDone && sv.end.kind == endDone,
		failed:   sv.state == stateFailed,
		enabled:  sv.enabled,
		quitting: sv.quitting,
		idle:     live == 0 && sv.custody.empty(),
	})
}
