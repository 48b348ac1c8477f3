package metac

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"metad/netctl"
)

// serialCommands are the commands --serial rolls out.
var serialCommands = []string{"start", "stop", "restart", "kill", "enable", "disable", "reload", "reexec"}

// Rollouts (--serial): how long a batch's services may take to be ready
// again, and how often metac asks whether they are.
const (
	defaultReadyWait = time.Minute
	readyPoll        = 200 * time.Millisecond
	// readyAsk bounds each list that asks whether a batch is ready.
	readyAsk = 2 * time.Second
)

// ready reports whether a service counts as ready on a host, for rolling
// operations, --summary, list and the waits of start, restart and wait:
// what metad reports (Service.Ready). A metad that does not report
// readiness leaves it out; then the old rule holds: a daemon that is
// "running" with an instance, or another class (listener, stream) that is
// enabled and "running" or "idle" (waiting for connections); and a
// disabled daemon or listener that runs the instance a start gave it.
// This is the one place that says so.
func ready(s netctl.Service) bool {
	if s.Ready != nil {
		return *s.Ready
	}
	switch s.State {
	case "ready":
		return true
	case "running":
		return s.Class != "daemon" || len(s.Instances) > 0
	case "idle":
		return s.Class != "daemon" && s.Enabled
	case "disabled":
		return s.Class != "stream" && len(s.Instances) > 0
	}
	return false
}

// rollout carries a command out on hosts a batch at a time (--serial).
type rollout struct {
	o   *options
	key []byte
	req netctl.Request
	out *printer
}

// run rolls the command out to hosts and returns metac's exit status.
func (r *rollout) run(hosts []string) int {
	r.out.multi = true
	n := r.o.serial
	batches := (len(hosts) + n - 1) / n
	status := exitOK
	for b := 0; b*n < len(hosts); b++ {
		batch := hosts[b*n : min((b+1)*n, len(hosts))]
		if !r.o.json {
			fmt.Fprintf(r.out.stdout, "==> batch %d of %d: %s <==\n", b+1, batches, strings.Join(batch, " "))
		}
		failed := r.batch(batch)
		if len(failed) == 0 {
			continue
		}
		status = exitFailed
		if r.o.keepGoing {
			continue
		}
		rest := hosts[(b+1)*n:]
		fmt.Fprintf(r.out.stderr, "%s: rollout stopped at batch %d of %d, on %s; %d hosts done, %d not started\n",
			r.out.prog, b+1, batches, strings.Join(failed, ", "), b*n+len(batch)-len(failed), len(rest))
		if len(rest) > 0 {
			fmt.Fprintf(r.out.stderr, "%s: to continue once %s is fixed: %s\n", r.out.prog, strings.Join(failed, ", "), r.continueWith(rest))
		}
		return status
	}
	return status
}

// continueWith returns the metac command line that rolls the command out
// to the hosts not done.
func (r *rollout) continueWith(rest []string) string {
	o := r.o
	words := []string{r.out.prog, "-h", strings.Join(rest, ","), "--serial", strconv.Itoa(o.serial)}
	if o.keyFile != netctl.DefaultKeyFile {
		words = append(words, "-k", o.keyFile)
	}
	if o.port != netctl.DefaultPort {
		words = append(words, "-p", strconv.Itoa(o.port))
	}
	if o.timeout > 0 {
		words = append(words, "-t", o.timeout.String())
	}
	if o.readyWait != defaultReadyWait {
		words = append(words, "--ready-wait", o.readyWait.String())
	}
	if o.json {
		words = append(words, "--json")
	}
	return strings.Join(append(append(words, o.cmd), o.args...), " ")
}

// watched returns the services to wait for after the command: the named
// ones, or, for reload and reexec, every one; nil for none (stop and
// disable leave services not ready on purpose).
func (r *rollout) watched() (names []string, all bool) {
	switch r.o.cmd {
	case "stop", "disable":
		return nil, false
	case "reload", "reexec":
		return nil, true
	case "kill":
		return r.o.args[:1], false
	}
	return r.o.args, false
}

// call sends req to hosts and returns the answers by host.
func (r *rollout) call(hosts []string, req netctl.Request, wait time.Duration) (map[string]netctl.Answer, error) {
	t := netctl.Target{Hosts: hosts, Port: r.o.port, Timeout: wait}
	got, err := netctl.Call(r.key, t, req)
	if err != nil {
		return nil, err
	}
	out := make(map[string]netctl.Answer, len(got.Answers))
	for _, a := range got.Answers {
		out[a.Host] = a
	}
	return out, nil
}

// batch carries the command out on hosts, waits for their services to be
// ready again, and returns the hosts that failed, each reported.
func (r *rollout) batch(hosts []string) []string {
	names, all := r.watched()
	// What was ready before: reload and reexec wait for those services
	// only; restart waits for new instances.
	before := map[string][]netctl.Service{}
	if names != nil || all {
		if got, err := r.call(hosts, netctl.NewRequest("list", names...), r.o.wait()); err == nil {
			for h, a := range got {
				if a.Reply != nil && a.Reply.OK {
					before[h] = a.Reply.Services
				}
			}
		}
	}
	got, err := r.call(hosts, r.req, r.o.wait())
	if err != nil {
		r.out.fail("", err.Error())
		return hosts
	}
	var answers []netctl.Answer
	for _, h := range hosts {
		answers = append(answers, got[h])
	}
	r.out.print(answers)
	var failed, pending []string
	for _, h := range hosts {
		if a := got[h]; a.Reply == nil || !a.Reply.OK {
			failed = append(failed, h)
		} else if names != nil || all {
			pending = append(pending, h)
		}
	}
	deadline := time.Now().Add(r.o.readyWait)
	why := map[string]string{}
	// A host is back once two lists in a row find its services ready with
	// the same instances: one list may catch a new instance in the
	// moment before it crashes.
	last := map[string][]netctl.Service{}
	for len(pending) > 0 {
		got, err := r.call(pending, netctl.NewRequest("list", names...), min(readyAsk, r.o.wait()))
		if err != nil {
			r.out.fail("", err.Error())
			return append(failed, pending...)
		}
		pending = slices.DeleteFunc(pending, func(h string) bool {
			a := got[h]
			if a.Reply == nil || !a.Reply.OK {
				why[h] = a.Err
				if a.Reply != nil {
					why[h] = a.Reply.Error
				}
				return false
			}
			ok, w := cameBack(r.o.cmd, before[h], a.Reply.Services, all)
			why[h] = w
			if !ok {
				delete(last, h)
				return false
			}
			prev, seen := last[h]
			last[h] = a.Reply.Services
			if !seen || !sameInstances(prev, a.Reply.Services) {
				why[h] = "not ready in two lists in a row"
				return false
			}
			return true
		})
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(readyPoll)
	}
	for _, h := range pending {
		r.out.printError(netctl.Answer{Host: h, Err: fmt.Sprintf("not ready within %v: %s", r.o.readyWait, why[h])})
	}
	return append(failed, pending...)
}

// cameBack reports whether a host's services are ready again after cmd,
// from the list before and the list now; else it says which is not. With
// all, the services to wait for are those that were ready before; else
// every service of the list. After restart, a daemon must run new
// instances.
func cameBack(cmd string, before, now []netctl.Service, all bool) (bool, string) {
	was := map[string]netctl.Service{}
	for _, s := range before {
		was[s.Name] = s
	}
	for _, s := range now {
		old, known := was[s.Name]
		switch {
		case all && (!known || !ready(old)):
			continue
		case !ready(s):
			return false, fmt.Sprintf("%s is %s", s.Name, s.State)
		case cmd == "restart" && known && s.Class == "daemon" && samePIDs(old, s):
			return false, fmt.Sprintf("%s still runs its old instances", s.Name)
		}
	}
	return true, ""
}

// sameInstances reports whether two lists show every service with the
// same instances.
func sameInstances(a, b []netctl.Service) bool {
	return slices.EqualFunc(a, b, func(x, y netctl.Service) bool { return x.Name == y.Name && samePIDs(x, y) })
}

// samePIDs reports whether two snapshots of a service show the same
// instances.
func samePIDs(a, b netctl.Service) bool {
	return slices.EqualFunc(a.Instances, b.Instances, func(x, y netctl.Instance) bool { return x.PID == y.PID })
}
