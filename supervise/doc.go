// Package supervise runs the services of a config: it owns each service's
// state (enabled, instances, crash count, timers) in one goroutine per
// service, applies the class rules of daemon, listener and stream, and
// offers enable, disable, start, stop, kill, restart and list as a Go API
// that is safe for concurrent use.
//
// It starts processes only through the Procs interface (implemented by
// initsys.Reaper) and never waits for a process itself: exits arrive from
// the reaper. It does not parse config text (conffmt does), speak any
// control protocol (netctl does) or handle metad's own signals (main does).
package supervise
