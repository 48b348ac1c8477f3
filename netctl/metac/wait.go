package metac

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"metad/netctl"
)

// action is what a wait follows: the outcome of start, stop or restart,
// or, for the wait command, readiness.
type action uint8

const (
	actStart action = iota
	actStop
	actRestart
	actWait
)

// waitCommand is metac's own command that waits until services are ready;
// it never reaches metad, which only answers the status it asks for.
const (
	waitCommand = "wait"
	waitArgs    = "SERVICE..." // for usage messages
)

// waitCommands are the commands that wait for their outcome unless
// --no-wait is given.
var waitCommands = []string{"start", "stop", "restart"}

// actionOf returns what a wait after cmd follows.
func actionOf(cmd string) action {
	switch cmd {
	case "stop":
		return actStop
	case "restart":
		return actRestart
	case waitCommand:
		return actWait
	}
	return actStart
}

// The bounds of a wait. metac asks for the services' status every
// pollEvery; the outcome may take the service's own timeouts plus
// waitMargin. A metad that does not report the timeouts is taken to
// have the defaults (SPEC §8, metad --stop-timeout).
const (
	pollEvery           = 100 * time.Millisecond
	waitMargin          = 5 * time.Second
	defaultReadyTimeout = 90 * time.Second
	defaultStopTimeout  = 10 * time.Second
)

// outcome is how a request ended for one service: the line metac prints
// after "NAME: ", and whether it is a success.
type outcome struct {
	ok   bool
	text string
}

// watch follows one service from a request to its outcome. It reads no
// clock and does no I/O: it judges the statuses it is shown.
type watch struct {
	act    action
	before netctl.Service // as the status before the request showed it
	// seen is the last look, when it found the service ready for the
	// request: a ready outcome holds once the next look finds no
	// instance ended since, so that a program that exits at once is
	// not reported ready for the moment it ran.
	seen *netctl.Service
}

// bound returns how long the outcome may take: a stop, the stop timeout
// twice (the instances, then what they left behind, each get it), a
// start the ready timeout, a restart both; each plus waitMargin.
func (w *watch) bound() time.Duration {
	ready, stop := seconds(w.before.ReadyTimeout), seconds(w.before.StopTimeout)
	if ready <= 0 {
		ready = defaultReadyTimeout
	}
	if stop <= 0 {
		stop = defaultStopTimeout
	}
	switch w.act {
	case actStop:
		return 2*stop + waitMargin
	case actRestart:
		return 2*stop + ready + waitMargin
	}
	return ready + waitMargin
}

// look judges the service as a status taken at time at shows it (at only
// says how far the next start is). It returns the outcome, and true once
// the outcome is known; false: look again.
func (w *watch) look(now netctl.Service, at time.Time) (outcome, bool) {
	if w.act == actStop {
		return w.stopped(now)
	}
	gone := goneInstances(w.before, now)
	if w.act == actRestart && gone < len(w.before.Instances) {
		w.seen = nil // the old instances are still stopping
		return outcome{}, false
	}
	// fresh: an instance was started since the request. ended: instances
	// started since that ended (a stream's come and go with connections).
	fresh := now.Starts > w.before.Starts
	ended := now.Exits - w.before.Exits - gone
	if w.act == actWait || now.Class == "stream" {
		ended = 0
	}
	startFailed := now.StartErrorAt != nil && (w.before.StartErrorAt == nil || now.StartErrorAt.After(*w.before.StartErrorAt))
	isReady := ready(now)
	switch {
	case now.State == "failed" && (w.act != actStart || fresh || ended > 0 || startFailed):
		return outcome{false, "failed: " + failure(now, startFailed && ended == 0)}, true
	case now.State == "done" && (w.act != actStart || ended > 0):
		return outcome{true, "done (" + exitStatus(now.LastExit) + ")"}, true
	case ended > 0 && !cleanEnd(now.LastExit):
		return outcome{false, "not ready: " + failure(now, false) + nextStart(now, at)}, true
	case ended > 0 && !isReady && now.State != "starting" && now.State != "waiting":
		return outcome{true, "ended (" + exitStatus(now.LastExit) + ")"}, true
	case startFailed && !isReady:
		return outcome{false, "not ready: " + failure(now, true) + nextStart(now, at)}, true
	case isReady && (fresh || w.act != actStart && now.Class != "daemon" || w.act == actWait):
		if w.act == actWait { // any instance is the one waited for
			return w.confirm(now, readyText(netctl.Service{}, now, true))
		}
		return w.confirm(now, readyText(w.before, now, fresh))
	case w.act == actStart && now.State == "disabled" && fresh && newestPID(w.before, now) != 0:
		// A disabled service runs the instance a start gave it, and
		// metad tells no readiness for it: it runs, and is not started
		// again when it ends.
		return w.confirm(now, "started (pid "+strconv.Itoa(newestPID(w.before, now))+", disabled)")
	case w.act == actRestart && !fresh && !isReady && (now.State == "disabled" || now.State == "idle"):
		// Stopped, and the class rules start nothing now.
		text := "stopped (" + now.State
		if now.NextStart != nil {
			text += ", next start in " + until(at, *now.NextStart)
		}
		return outcome{true, text + ")"}, true
	}
	w.seen = nil
	return outcome{}, false
}

// confirm returns the outcome text once two looks in a row find the
// service as it is now, with no instance ended between them; else it
// keeps now for the next look.
func (w *watch) confirm(now netctl.Service, text string) (outcome, bool) {
	if w.seen != nil && w.seen.Exits == now.Exits {
		return outcome{true, text}, true
	}
	seen := now
	w.seen = &seen
	return outcome{}, false
}

// stopped judges a stop: over once no instance and nothing in custody is
// left and the service is not stopping.
func (w *watch) stopped(now netctl.Service) (outcome, bool) {
	if len(now.Instances) > 0 || len(now.Custody) > 0 || now.State == "stopping" {
		return outcome{}, false
	}
	l := now.LastStop
	switch {
	case len(w.before.Instances) == 0 && len(w.before.Custody) == 0:
		return outcome{true, "stopped (was not running)"}, true
	case l != nil && l.Killed && (w.before.LastStop == nil || l.At.After(w.before.LastStop.At)):
		return outcome{true, "killed after " + tookText(seconds(l.Took))}, true
	}
	return outcome{true, "stopped"}, true
}

// expired is the outcome of a wait that ran out after d; last is the last
// status seen, nil if none came.
func (w *watch) expired(last *netctl.Service, d time.Duration) outcome {
	after := d.String()
	switch {
	case last == nil:
		return outcome{false, "no status within " + after}
	case w.act == actStop:
		return outcome{false, "still stopping after " + after + ": " + stateText(*last)}
	case w.act == actRestart && goneInstances(w.before, *last) < len(w.before.Instances):
		return outcome{false, "old instances still stopping after " + after + ": " + stateText(*last)}
	}
	return outcome{false, "not ready within " + after + ": " + stateText(*last)}
}

// goneInstances counts the instances of before that now no longer has.
func goneInstances(before, now netctl.Service) int {
	n := 0
	for _, in := range before.Instances {
		if !slices.ContainsFunc(now.Instances, func(x netctl.Instance) bool { return x.PID == in.PID }) {
			n++
		}
	}
	return n
}

// cleanEnd reports whether an instance ended without failing: exit status
// 0, the signal metad sent, or a stream client that went away.
func cleanEnd(e *netctl.LastExit) bool {
	return e != nil && (e.Outcome == "clean" || e.Outcome == "peer-gone")
}

// exitStatus says how the last instance ended: "exit status 3".
func exitStatus(e *netctl.LastExit) string {
	if e == nil {
		return "no exit"
	}
	return e.Status
}

// failure says why a service is not ready: the start that failed, or how
// its last instance ended.
func failure(s netctl.Service, start bool) string {
	if start && s.StartError != "" {
		return s.StartError
	}
	return exitStatus(s.LastExit)
}

// nextStart says when a service in backoff starts again: ", next start in
// 2s"; "" when none is scheduled.
func nextStart(s netctl.Service, at time.Time) string {
	if s.NextStart == nil {
		return ""
	}
	return ", next start in " + until(at, *s.NextStart)
}

// until says how long from at to t (see short).
func until(at, t time.Time) string { return short(t.Sub(at)) }

// short shows a duration to the second from a second on, else to a tenth
// of a second.
func short(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// readyText says how a service is ready: "ready (pid 812)", "ready
// (listening on port 80)". With fresh, it names the newest instance not
// in before.
func readyText(before, now netctl.Service, fresh bool) string {
	var parts []string
	if fresh && now.Class != "stream" {
		if pid := newestPID(before, now); pid != 0 {
			parts = append(parts, "pid "+strconv.Itoa(pid))
		}
	}
	if now.Class != "daemon" && now.Port != 0 {
		parts = append(parts, "listening on port "+strconv.Itoa(now.Port))
	}
	if len(parts) == 0 {
		return "ready"
	}
	return "ready (" + strings.Join(parts, ", ") + ")"
}

// newestPID returns the pid of the instance of now started last that
// before did not have; 0 if there is none.
func newestPID(before, now netctl.Service) int {
	var newest *netctl.Instance
	for i, in := range now.Instances {
		if slices.ContainsFunc(before.Instances, func(x netctl.Instance) bool { return x.PID == in.PID }) {
			continue
		}
		if newest == nil || in.Started.After(newest.Started) {
			newest = &now.Instances[i]
		}
	}
	if newest == nil {
		return 0
	}
	return newest.PID
}

// stateText is a service's state with its reason: "backoff (waiting out
// the backoff)".
func stateText(s netctl.Service) string {
	if s.Reason == "" || s.Reason == s.State {
		return s.State
	}
	return s.State + " (" + s.Reason + ")"
}
