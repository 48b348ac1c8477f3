// Package supervise runs the services of a config: it owns each service's
// state (enabled, instances, crash count, timers) in one goroutine per
// service, applies the class rules of daemon, listener and stream, and
// offers enable, disable, start, stop, kill, restart and list as a Go API
// that is safe for concurrent use.
//
// Each service goroutine alone decides: it holds the service's one state
// (set, with a reason, in one place), its one backoff record and its
// schedule (next, a pure function used by the timer and by list alike),
// and the class rule (daemonClass, listenerClass, streamClass behind the
// class interface), which owns the class's fields. A stream's admission
// is counted and decided there too; its acceptor goroutine only waits for
// the socket to become readable. Requests to a service goroutine are
// bounded in time, and a Supervisor refuses to start anything once its
// Shutdown has begun.
//
// A service keeps custody of what its ended instances leave in their
// sessions (CustodySource; /proc by default): stopped before the service
// starts again, and at stop and shutdown.
//
// It starts processes only through the Procs interface (implemented by
// initsys.Reaper) and never waits for a process itself: exits arrive from
// the reaper. It does not parse config text (conffmt does), speak any
// control protocol (netctl does) or handle metad's own signals (main does).
package supervise
