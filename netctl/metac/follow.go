package metac

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"metad/netctl"
)

// caller sends req to hosts and returns each host's answer, in the order
// of hosts, waiting at most wait. Its error is a local one (the socket
// cannot be reached, no socket for the network), already worded for the
// user.
type caller func(req netctl.Request, hosts []string, wait time.Duration) ([]netctl.Answer, error)

// localCaller sends requests on the local socket: its one host is
// localHost.
func localCaller(socket string) caller {
	return func(req netctl.Request, _ []string, wait time.Duration) ([]netctl.Answer, error) {
		r, err := netctl.CallLocal(socket, req, wait)
		if err != nil {
			return nil, fmt.Errorf("cannot reach metad at %s: %v", socket, err)
		}
		return []netctl.Answer{{Host: localHost, Reply: r}}, nil
	}
}

// netCaller sends requests to named hosts over the network.
func netCaller(key []byte, port int) caller {
	return func(req netctl.Request, hosts []string, wait time.Duration) ([]netctl.Answer, error) {
		got, err := netctl.Call(key, netctl.Target{Hosts: hosts, Port: port, Timeout: wait}, req)
		if err != nil {
			return nil, err
		}
		return got.Answers, nil
	}
}

// follower carries out start, stop or restart, or the wait command, on
// hosts, and waits for the outcome on each named service of each host
// (SPEC §13): it reads the services' status before the request, so that
// it can tell what the request did from what came before, then asks for
// it every pollEvery until each service has its outcome or its bound
// (watch.bound, or -t for the whole wait) has passed.
type follower struct {
	o        *options
	out      *printer
	call     caller
	hosts    []string
	failHost string // names the target of a local error in --json: "local" or ""

	limit   time.Time // -t: the end of the whole wait; zero without -t
	poll    string    // the command that reads the status: status, or list from an old metad
	results map[string]*hostResult
	order   []string   // the hosts, in the order of their answers
	pend    []*pending // the services whose outcome is not known yet
	status  int        // metac's exit status so far
}

// hostResult is what one host said and did.
type hostResult struct {
	answer   netctl.Answer // to the command (wait: to the first status)
	outcomes []outcomeJSON
}

// outcomeJSON is one service's outcome in the --json line of its host.
type outcomeJSON struct {
	Service string `json:"service"`
	OK      bool   `json:"ok"`
	Outcome string `json:"outcome"`
}

// pending is a service whose outcome is not known yet.
type pending struct {
	host, name string
	w          *watch
	deadline   time.Time
	after      time.Duration   // how long the wait for it may take, in all
	last       *netctl.Service // the last status seen
}

// run carries the command out, waits, prints the outcomes and returns
// metac's exit status.
func (f *follower) run() int {
	act := actionOf(f.o.cmd)
	names := slices.Compact(slices.Sorted(slices.Values(f.o.args)))
	if f.o.timeout > 0 {
		f.limit = time.Now().Add(f.o.timeout)
	}
	before, err := f.statusBefore(act, names)
	if err != nil {
		return f.out.fail(f.failHost, err.Error())
	}
	answers := before
	if act != actWait {
		if answers, err = f.ask(netctl.NewRequest(f.o.cmd, f.o.args...), f.hosts); err != nil {
			return f.out.fail(f.failHost, err.Error())
		}
	}
	begin := time.Now()
	f.expect(act, names, before, answers, begin)
	if act == actWait { // the status before is the first look
		for _, a := range before {
			f.look(a, begin)
		}
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for first := act != actWait; len(f.pend) > 0; first = false {
		if !first {
			<-tick.C
		}
		svcs := distinct(f.pend, func(p *pending) string { return p.name })
		got, err := f.ask(netctl.NewRequest(f.poll, svcs...), distinct(f.pend, func(p *pending) string { return p.host }))
		at := time.Now()
		if err == nil { // else a passing failure: ask again
			for _, a := range got {
				f.look(a, at)
			}
		}
		f.pend = slices.DeleteFunc(f.pend, func(p *pending) bool {
			if at.Before(p.deadline) {
				return false
			}
			f.settle(p, p.w.expired(p.last, p.after))
			return true
		})
	}
	if f.o.json {
		for _, h := range f.order {
			f.out.writeJSON(f.results[h].json())
		}
	}
	return f.status
}

// ask sends req to hosts, waiting for the replies as long as a request
// without -t would, or what is left of -t.
func (f *follower) ask(req netctl.Request, hosts []string) ([]netctl.Answer, error) {
	wait := f.o.defaultWait()
	if !f.limit.IsZero() {
		wait = max(time.Until(f.limit), pollEvery)
	}
	return f.call(req, hosts, wait)
}

// statusBefore reads the status of the named services on every host, and
// sets the command that reads it from then on: status, or list when a
// host is a metad too old to have status. Before start, stop and restart
// a list of every service tells first whether the names are known there:
// a status of an unknown name would fail, and metad would log that
// failure before the command's own. A host that does not know them all
// is not asked; the command then fails there, as it would without a wait.
func (f *follower) statusBefore(act action, names []string) ([]netctl.Answer, error) {
	hosts := f.hosts
	if act != actWait {
		all, err := f.ask(netctl.NewRequest("list"), hosts)
		if err != nil {
			return nil, err
		}
		hosts = nil
		for _, a := range all {
			if a.Reply != nil && a.Reply.OK && knowsAll(a.Reply.Services, names) {
				hosts = append(hosts, a.Host)
			}
		}
		if len(hosts) == 0 {
			return nil, nil
		}
	}
	f.poll = "status"
	before, err := f.ask(netctl.NewRequest(f.poll, names...), hosts)
	if err == nil && slices.ContainsFunc(before, func(a netctl.Answer) bool {
		return a.Reply != nil && strings.HasPrefix(a.Reply.Error, `unknown command "status"`)
	}) {
		f.poll = "list"
		before, err = f.ask(netctl.NewRequest(f.poll, names...), hosts)
	}
	return before, err
}

// knowsAll reports whether every name is one of svcs.
func knowsAll(svcs []netctl.Service, names []string) bool {
	for _, n := range names {
		if !slices.ContainsFunc(svcs, func(s netctl.Service) bool { return s.Name == n }) {
			return false
		}
	}
	return true
}

// expect takes each host's answer to the command: an error is reported;
// on a host that carried it out, each named service is waited for, from
// its status before.
func (f *follower) expect(act action, names []string, before, answers []netctl.Answer, begin time.Time) {
	befores := map[string][]netctl.Service{}
	for _, a := range before {
		if a.Reply != nil && a.Reply.OK {
			befores[a.Host] = a.Reply.Services
		}
	}
	f.results = map[string]*hostResult{}
	for _, a := range answers {
		f.results[a.Host] = &hostResult{answer: a}
		f.order = append(f.order, a.Host)
		switch {
		case a.Reply == nil:
			f.status = max(f.status, exitNoAnswer)
		case !a.Reply.OK:
			f.status = max(f.status, exitFailed)
		}
		if a.Reply == nil || !a.Reply.OK {
			if !f.o.json {
				f.out.printError(a)
			}
			continue
		}
		for _, s := range befores[a.Host] {
			if !slices.Contains(names, s.Name) || f.pending(a.Host, s.Name) >= 0 {
				continue
			}
			w := &watch{act: act, before: s}
			p := &pending{host: a.Host, name: s.Name, w: w, deadline: begin.Add(w.bound()), after: w.bound()}
			if !f.limit.IsZero() {
				p.deadline, p.after = f.limit, f.o.timeout
			}
			f.pend = append(f.pend, p)
		}
	}
}

// pending returns the index of a host's service in f.pend, -1 if it is
// not there.
func (f *follower) pending(host, name string) int {
	return slices.IndexFunc(f.pend, func(p *pending) bool { return p.host == host && p.name == name })
}

// look judges the services of one host's status, taken at at; those
// whose outcome is known are settled.
func (f *follower) look(a netctl.Answer, at time.Time) {
	if a.Reply == nil || !a.Reply.OK {
		return
	}
	for _, s := range a.Reply.Services {
		i := f.pending(a.Host, s.Name)
		if i < 0 {
			continue
		}
		p := f.pend[i]
		p.last = &s
		if oc, done := p.w.look(s, at); done {
			f.settle(p, oc)
			f.pend = slices.Delete(f.pend, i, i+1)
		}
	}
}

// settle records a service's outcome and, without --json, prints it at
// once: a success on stdout, a failure on stderr.
func (f *follower) settle(p *pending, oc outcome) {
	r := f.results[p.host]
	r.outcomes = append(r.outcomes, outcomeJSON{Service: p.name, OK: oc.ok, Outcome: oc.text})
	if !oc.ok {
		f.status = max(f.status, exitFailed)
	}
	if f.o.json {
		return
	}
	prefix := ""
	if p.host != localHost {
		prefix = p.host + ": "
	}
	if oc.ok {
		fmt.Fprintf(f.out.stdout, "%s%s: %s\n", prefix, p.name, oc.text)
	} else {
		fmt.Fprintf(f.out.stderr, "%s: %s%s: %s\n", f.out.prog, prefix, p.name, oc.text)
	}
	// Each outcome is shown when it is known, in order with the failures
	// on stderr.
	if w, ok := f.out.stdout.(interface{ Flush() error }); ok {
		w.Flush()
	}
}

// json is a host's line of --json: the reply to the command, and the
// outcomes, ok only when every one is.
func (r *hostResult) json() hostJSON {
	j := hostJSON{Host: r.answer.Host, Error: r.answer.Err}
	if rep := r.answer.Reply; rep != nil {
		j.Name, j.OK, j.Error = rep.Name, rep.OK, rep.Error
	}
	var failed []string
	for _, oc := range r.outcomes {
		if !oc.OK {
			failed = append(failed, oc.Service+": "+oc.Outcome)
		}
	}
	if len(failed) > 0 {
		j.OK, j.Error = false, strings.Join(failed, "\n")
	}
	if j.OK || len(r.outcomes) > 0 {
		j.Outcomes = r.outcomes
		if j.Outcomes == nil {
			j.Outcomes = []outcomeJSON{}
		}
	}
	return j
}

// distinct returns key of each pending service, in order, each once: the
// hosts or the names still waited for.
func distinct(pend []*pending, key func(*pending) string) []string {
	var out []string
	for _, p := range pend {
		if k := key(p); !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}
