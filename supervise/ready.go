package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
	"metad/supervise/probe"
)

// Readiness (SPEC §8): an instance is started, then ready. With
// ready=started it is ready at once (a pidfile daemon: once its pid is
// followed). The other forms are watched by helper goroutines that only
// report to the service goroutine through its event mailbox: a line on
// the notification descriptor (fd:N), a probe that succeeded (tcp:,
// exec:), a datagram on the service's notify socket (notify). The
// service goroutine alone decides; an instance not ready by its
// ready_timeout is stopped and its run counts as a crash.

// readyRetry is how often ready=tcp: and ready=exec: are tried.
const readyRetry = 200 * time.Millisecond

// eventKind is what a helper goroutine reports.
type eventKind uint8

const (
	evReady  eventKind = iota // instance pid is ready
	evProbe                   // a try of instance pid's readiness failed: err says why
	evNotify                  // the notify socket has datagrams waiting
	evDeps                    // a dependency or dependant published a change
	evHealth                  // a health check of instance pid ended: err is nil when healthy
	evHelper                  // a helper goroutine has ended
)

// event is a report to the service goroutine.
type event struct {
	kind eventKind
	pid  int
	err  error
}

// helper is a goroutine the service owns: stop asks it to end, done is
// closed when it has.
type helper struct {
	stop chan struct{}
	done chan struct{}
	quit func() // extra wake-up for a helper blocked outside stop; nil if none
}

// goHelper runs f in a goroutine the service can stop and wait for.
func (sv *service) goHelper(f func(stop <-chan struct{})) *helper {
	h := &helper{stop: make(chan struct{}), done: make(chan struct{})}
	sv.helpers = append(sv.helpers, h)
	go func() {
		// Its end wakes the service, which may be waiting for nothing
		// else before it ends.
		defer sv.events.put(event{kind: evHelper})
		defer close(h.done)
		f(h.stop)
	}()
	return h
}

// cancel asks the helper to end; it does not wait.
func (h *helper) cancel() {
	if h == nil {
		return
	}
	select {
	case <-h.stop:
	default:
		close(h.stop)
		if h.quit != nil {
			h.quit()
		}
	}
}

// helpersIdle reports whether every helper goroutine has ended, and
// forgets those that have.
func (sv *service) helpersIdle() bool {
	sv.helpers = slices.DeleteFunc(sv.helpers, func(h *helper) bool {
		select {
		case <-h.done:
			return true
		default:
			return false
		}
	})
	return len(sv.helpers) == 0
}

// stopHelpers cancels every helper and waits for them, bounded: each
// wakes at once on its stop channel.
func (sv *service) stopHelpers() {
	for _, h := range sv.helpers {
		h.cancel()
	}
	deadline := time.NewTimer(helperPatience)
	defer deadline.Stop()
	for _, h := range sv.helpers {
		select {
		case <-h.done:
		case <-deadline.C:
			sv.log.Error().Msg("a readiness or health helper did not end")
			return
		}
	}
	sv.helpers = nil
}

// readiness prepares what an instance started now needs to tell it is
// ready: for fd:N, the pipe whose write end the program gets as
// descriptor N (files is extended to hold it). It returns what to do
// once the instance is started, and what to do if the start failed.
func (sv *service) readiness(files []int) ([]int, func(inst *instance, now time.Time), func(), error) {
	r := sv.conf.Ready
	setDeadline := func(inst *instance, now time.Time) {
		inst.readyBy = now.Add(sv.conf.ReadyTimeout)
	}
	switch r.Kind {
	case conffmt.ReadyStarted:
		return files, func(inst *instance, now time.Time) {
			if !inst.launcher && !sv.oneShot() {
				inst.ready = true
				sv.startHealth(inst, now)
			}
		}, func() {}, nil
	case conffmt.ReadyNotify:
		if err := sv.openNotify(); err != nil {
			return nil, nil, nil, err
		}
		return files, setDeadline, func() {}, nil
	case conffmt.ReadyFD:
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return nil, nil, nil, fmt.Errorf("cannot make the ready=fd:%d pipe: %w", r.FD, err)
		}
		for len(files) <= r.FD {
			files = append(files, -1)
		}
		files[r.FD] = p[1]
		started := func(inst *instance, now time.Time) {
			unix.Close(p[1])
			setDeadline(inst, now)
			inst.probe = sv.readLine(inst.pid, p[0], r.FD)
		}
		failed := func() { unix.Close(p[0]); unix.Close(p[1]) }
		return files, started, failed, nil
	case conffmt.ReadyTCP, conffmt.ReadyExec:
		return files, func(inst *instance, now time.Time) {
			setDeadline(inst, now)
			inst.probe = sv.tryReady(inst.pid, r.Probe)
		}, func() {}, nil
	}
	return nil, nil, nil, fmt.Errorf("cannot tell readiness: ready kind %d", r.Kind)
}

// readLine reads the notification descriptor of instance pid until a
// newline, which makes it ready. It owns fd.
func (sv *service) readLine(pid, fd, n int) *helper {
	unix.SetNonblock(fd, true)
	f := os.NewFile(uintptr(fd), "ready-fd")
	h := sv.goHelper(func(stop <-chan struct{}) {
		defer f.Close()
		buf := make([]byte, 512)
		for {
			k, err := f.Read(buf)
			if slices.Contains(buf[:k], '\n') {
				sv.events.put(event{kind: evReady, pid: pid})
				return
			}
			if err != nil {
				select {
				case <-stop:
				default:
					if errors.Is(err, io.EOF) {
						err = errors.New("descriptor " + strconv.Itoa(n) + " closed without a line")
					}
					sv.events.put(event{kind: evProbe, pid: pid, err: err})
				}
				return
			}
		}
	})
	h.quit = func() { f.SetReadDeadline(time.Now()) }
	return h
}

// tryReady runs the readiness probe of instance pid every readyRetry
// until it succeeds or the helper is stopped, reporting each failure.
func (sv *service) tryReady(pid int, p conffmt.Probe) *helper {
	return sv.probeEvery(p, 0, readyRetry, max(readyRetry, time.Second), func(err error) bool {
		if err == nil {
			sv.events.put(event{kind: evReady, pid: pid})
			return false
		}
		sv.events.put(event{kind: evProbe, pid: pid, err: err})
		return true
	})
}

// probeEvery runs probe p as the service's programs run (its
// environment, directory and user), first after first, then every
// period, each try bounded by timeout, and hands each result to report,
// which says whether to go on. It ends when report says so or the helper
// is stopped; a try under way is then cancelled.
func (sv *service) probeEvery(p conffmt.Probe, first, period, timeout time.Duration, report func(err error) bool) *helper {
	run, proc := sv.sup.probe, sv.spec.probeProc()
	return sv.goHelper(func(stop <-chan struct{}) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { // ends with the helper: cancel ends ctx
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		t := time.NewTimer(first)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			tctx, tcancel := context.WithTimeout(ctx, timeout)
			err := run(tctx, p, proc)
			tcancel()
			if ctx.Err() != nil || !report(err) {
				return
			}
			t.Reset(period)
		}
	})
}

// handle applies one event reported by a helper.
func (sv *service) handle(ev event, now time.Time) {
	switch ev.kind {
	case evReady:
		if inst := sv.byPID(ev.pid); inst != nil {
			sv.markReady(inst, now, readyText(sv.conf.Ready))
		}
	case evProbe:
		if inst := sv.byPID(ev.pid); inst != nil && !inst.ready {
			sv.probeErr = ev.err.Error()
		}
	case evNotify:
		sv.readNotify(now)
	case evDeps:
		sv.refreshDeps(now)
	case evHealth:
		sv.healthEvent(ev, now)
	case evHelper:
	default:
		sv.log.Error().Int("kind", int(ev.kind)).Msg("unknown event")
	}
}

// markReady records that inst is ready.
func (sv *service) markReady(inst *instance, now time.Time, how string) {
	if inst.ready {
		return
	}
	inst.ready, inst.readyBy = true, time.Time{}
	inst.probe.cancel()
	inst.probe = nil
	sv.probeErr = ""
	sv.log.Info().Int("pid", inst.pid).Str("by", how).Stringer("took", now.Sub(inst.started).Round(time.Millisecond)).Msg("ready")
	sv.startHealth(inst, now)
}

// lateInstances stops the instances whose ready timeout has passed: their
// runs count as crashes.
func (sv *service) lateInstances(now time.Time) {
	for _, inst := range sv.instances {
		if inst.ready || inst.asked || inst.readyBy.IsZero() || now.Before(inst.readyBy) {
			continue
		}
		inst.late = true
		inst.probe.cancel()
		inst.probe = nil
		sv.log.Warn().Int("pid", inst.pid).Stringer("ready_timeout", sv.conf.ReadyTimeout).Str("ready", readyText(sv.conf.Ready)).Msg("not ready in time: stopping it")
		sv.stopInstance(inst, now, sv.conf.Stop)
	}
}

// readyDeadline is the earliest ready timeout of the instances.
func (sv *service) readyDeadline() time.Time {
	var t time.Time
	for _, inst := range sv.instances {
		if !inst.ready && !inst.asked {
			t = earliest(t, inst.readyBy)
		}
	}
	return t
}

// startingReason says what a starting service waits for.
func (sv *service) startingReason() string {
	var why string
	switch {
	case sv.plan().live > len(sv.instances):
		why = "waiting for the daemon's pidfile"
	case sv.oneShot():
		why = "running once (restart=never): done when it exits 0"
	case sv.conf.Ready.Kind == conffmt.ReadyStarted:
		why = "starting"
	default:
		why = "waiting for " + readyText(sv.conf.Ready)
	}
	if sv.probeErr != "" {
		why += ": " + sv.probeErr
	}
	return why
}

// readyReason says how a ready service became ready, or what its program
// last said of itself.
func (sv *service) readyReason() string {
	for _, inst := range sv.instances {
		if inst.quitting != "" {
			return inst.quitting
		}
	}
	if sv.conf.Ready.Kind == conffmt.ReadyStarted {
		return "started"
	}
	return "ready by " + readyText(sv.conf.Ready)
}

// readyText is a ready= option as written.
func readyText(r conffmt.Ready) string {
	switch r.Kind {
	case conffmt.ReadyStarted:
		return "ready=started"
	case conffmt.ReadyNotify:
		return "READY=1"
	case conffmt.ReadyFD:
		return "a line on fd " + strconv.Itoa(r.FD)
	default:
		return r.Probe.Text
	}
}

// probeFunc returns the probe runner of cfg, or the real one: exec
// probes are started through cfg.Procs, the one reaper.
func probeFunc(cfg Config) func(ctx context.Context, p conffmt.Probe, proc initsys.Proc) error {
	if cfg.Probe != nil {
		return cfg.Probe
	}
	return func(ctx context.Context, p conffmt.Probe, proc initsys.Proc) error {
		return probe.Run(ctx, p, probe.Exec{Spawner: cfg.Procs, Proc: proc})
	}
}

// probeProc is what an exec: probe of the service runs as: its
// environment, directory and user.
func (sp *spec) probeProc() initsys.Proc {
	return initsys.Proc{Env: sp.env, Dir: sp.dir, Cred: sp.cred}
}

// byPID returns the instance a helper of pid reports on: the instance of
// that pid, or the daemon that the launcher pid left behind.
func (sv *service) byPID(pid int) *instance {
	if inst := sv.instances[pid]; inst != nil {
		return inst
	}
	for _, inst := range sv.instances {
		if inst.via == pid {
			return inst
		}
	}
	return nil
}

// oneShot reports whether the service is a one-shot: a restart=never
// daemon with ready=started, which is never ready while it runs but done
// once it has exited 0 — what after= waits for (SPEC §8, s6-rc's
// oneshots).
func (sv *service) oneShot() bool {
	c := &sv.conf
	return c.Class == conffmt.Daemon && c.Restart == conffmt.RestartNever && c.Ready.Kind == conffmt.ReadyStarted
}
