package supervise

import (
	"reflect"
	"time"

	"metad/conffmt"
)

// Diff says what a reload changed, by service name, in config order.
type Diff struct {
	Added   []string
	Removed []string
	Changed []string
}

// Reload applies a new config by service name: a service whose settings
// are the same is not touched (same pids, same socket, same backoff
// state); a removed one is stopped and its socket closed; an added one
// starts; a changed one gets the new settings — in place when running
// instances are unaffected, else by replacing its instances (see
// service.update). svcs must be valid, as conffmt.Parse returns them.
// Once Shutdown has begun it changes nothing and returns an empty Diff.
func (s *Supervisor) Reload(svcs []conffmt.Service) Diff {
	var d Diff
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return d
	}
	old := s.services
	next := make(map[string]*service, len(svcs))
	var order []*service
	var changed, added, kept []*service
	var changedConf []conffmt.Service
	for _, c := range svcs {
		if sv, ok := old[c.Name]; ok && sv.conf.Class == c.Class {
			next[c.Name] = sv
			order = append(order, sv)
			if !sameService(sv.conf, c) {
				changed = append(changed, sv)
				changedConf = append(changedConf, c)
				d.Changed = append(d.Changed, c.Name)
			} else {
				kept = append(kept, sv)
			}
			continue
		}
		sv := newService(s, c)
		s.deps.add(sv)
		next[c.Name] = sv
		order = append(order, sv)
		added = append(added, sv)
		d.Added = append(d.Added, c.Name)
	}
	var removed []*service
	for _, sv := range s.order {
		if next[sv.conf.Name] != sv {
			removed = append(removed, sv)
			d.Removed = append(d.Removed, sv.conf.Name)
		}
	}
	s.services, s.order = next, order
	live := s.leaving[:0]
	for _, sv := range s.leaving {
		select {
		case <-sv.done:
		default:
			live = append(live, sv)
		}
	}
	s.leaving = append(live, removed...)
	// Removed services first, so that their ports are free for the rest.
	// The requests are bounded; a service that does not answer is logged
	// by its own goroutine's absence and stopped at shutdown.
	for _, sv := range removed {
		s.tell(sv, func(now time.Time) {
			sv.log.Info().Msg("removed")
			sv.quit(now, false)
		})
	}
	for i, sv := range changed {
		s.tell(sv, func(now time.Time) { sv.update(changedConf[i], now) })
	}
	for _, sv := range kept {
		s.tell(sv, func(now time.Time) {
			if sv.end.kind != endNone {
				sv.again() // a reload tries a done or failed service again
				sv.reconcile(now)
			}
		})
	}
	for _, sv := range added {
		s.launch(sv)
	}
	s.mu.Unlock()
	return d
}

// tell runs f in sv's goroutine, bounded like every request; a failure
// is logged, since Reload has no error to return it in.
func (s *Supervisor) tell(sv *service, f func(now time.Time)) {
	if _, err := ask(sv, s.cfg.CallTimeout, func(now time.Time) struct{} { f(now); return struct{}{} }); err != nil {
		s.cfg.Log.Error().Err(err).Msg("cannot reload service")
	}
}

// sameService reports whether two configs of a service are the same,
// wherever in the file they stand.
func sameService(a, b conffmt.Service) bool {
	a.Pos, b.Pos = conffmt.Pos{}, conffmt.Pos{}
	return reflect.DeepEqual(a, b)
}

// inPlace reports whether a service can go from a to b without touching
// its running instances: only settings that govern future starts differ.
func inPlace(a, b conffmt.Service) bool {
	b.Min, b.Max, b.Period, b.Enabled = a.Min, a.Max, a.Period, a.Enabled
	b.Crash, b.Backoff, b.Stop = a.Crash, a.Backoff, a.Stop
	b.Addr, b.Port, b.Backlog = a.Addr, a.Port, a.Backlog
	b.After, b.Needs, b.Restart, b.Retries = a.After, a.Needs, a.Restart, a.Retries
	b.OnFailure, b.OnSuccess, b.StopTimeout, b.ReadyTimeout = a.OnFailure, a.OnSuccess, a.StopTimeout, a.ReadyTimeout
	b.Check, b.CheckEvery, b.CheckTimeout, b.CheckFails, b.Quiet = a.Check, a.CheckEvery, a.CheckTimeout, a.CheckFails, a.Quiet
	b.PerSource, b.Rate, b.OnlyFrom = a.PerSource, a.Rate, a.OnlyFrom
	return sameService(a, b)
}

// update gives the service new settings. Settings that only govern future
// starts (min, max, period, enabled, crash, backoff, stop) apply in place.
// A new address, port or backlog reopens the socket. Any other change
// (program, arguments, user, environment...) replaces the instances of a
// daemon or listener: they get the stop signal and the class rules start
// new ones. Running stream instances serve their connections to the end;
// new connections get the new settings.
func (sv *service) update(c conffmt.Service, now time.Time) {
	old := sv.conf
	sv.conf = c
	sv.spec = newSpec(&c, sv.sup.cfg.Env)
	if c.Class == conffmt.Listener {
		sv.spec = sv.spec.listener(sv.sup.shim, c.Name)
	}
	if old.Enabled != c.Enabled {
		sv.enabled = c.Enabled
	}
	sv.sup.deps.rewire(sv, old.After, c.After)
	sv.again()
	if sv.conf.Ready.Kind != conffmt.ReadyNotify {
		sv.closeNotify()
	}
	replace := sv.cls.update(&old, now)
	if replace {
		sv.stopInstances(now)
	}
	sv.log.Info().Bool("replaced", replace).Msg("changed")
	sv.reconcile(now)
}
