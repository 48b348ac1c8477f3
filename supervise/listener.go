package supervise

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"metad/conffmt"
)

// ShimArgv0 is the argv[0] with which metad runs its own binary as the
// listener shim: a tiny step that runs in the child before the program, so
// that LISTEN_PID can be the program's own pid (os/exec fixes the
// environment before fork). main calls ExecShim when it sees it.
const ShimArgv0 = "metad:listener"

// ExecShim is the listener shim: args are the program's path and its
// argv. It adds LISTEN_PID=<own pid> to the environment and executes the
// program in place of itself, keeping every descriptor. It returns only on
// failure, with the exit status a shell would use.
func ExecShim(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "metad: the listener shim needs a program and its argv")
		return 2
	}
	env := append(os.Environ(), "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	err := unix.Exec(args[0], args[1:], env)
	fmt.Fprintf(os.Stderr, "metad: cannot start %q: %v\n", args[0], err)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return 127
	}
	return 126
}

// listenerClass is the class rule of listener services: one program that gets
// the listening socket, started on the first connection (or at once with
// min=1) and again on the next connection after it ends.
type listenerClass struct {
	sv      *service
	lfd     int           // metad's copy of the listening socket; -1 when closed
	watcher *watcher      // waits for a connection while no instance runs
	ready   chan struct{} // a watcher saw a connection (or was cancelled)
	waiting bool          // a connection waits for a new instance
}

// watcher waits, in a goroutine blocked in poll(2), for a connection on a
// listener's socket while no instance runs. metad does not accept it: the
// program it starts will.
type watcher struct {
	cancel int // write end of a pipe that wakes the poll
	done   chan struct{}
	saw    bool // set before done is closed: a connection waits
}

func newListener(sv *service) *listenerClass {
	return &listenerClass{sv: sv, lfd: -1, ready: make(chan struct{}, 1)}
}

func (l *listenerClass) plan(p *plan) {
	p.open = l.lfd >= 0
	p.waiting = l.waiting
}

func (l *listenerClass) start(now time.Time, why reason) error {
	sv := l.sv
	if why == forListen {
		fd, err := sv.openSocket()
		if err != nil {
			return err
		}
		l.lfd = fd
		sv.log.Info().Stringer("addr", sv.endpoint()).Msg("listening")
		l.watch()
		return nil
	}
	l.stopWatching()
	l.waiting = false
	inst, err := sv.launch(now, []int{sv.sup.stdin, sv.sup.stdout, sv.sup.stderr, l.lfd}, nil, remote{})
	if err != nil {
		l.watch()
		return err
	}
	sv.log.Info().Int("pid", inst.pid).Str("why", why.String()).Msg("started")
	return nil
}

// close stops the watcher and closes metad's copy of the socket; a
// running instance keeps its own.
func (l *listenerClass) close() {
	l.stopWatching()
	l.waiting = false
	if l.lfd >= 0 {
		closeFD(l.lfd)
		l.lfd = -1
		l.sv.log.Info().Stringer("addr", l.sv.endpoint()).Msg("closed socket")
	}
}

func (l *listenerClass) ended(_ *instance, end ending) {
	l.sv.countEnd(end.exit.Time, end)
	if len(l.sv.instances) == 0 && l.sv.active() {
		l.watch()
	}
}

func (l *listenerClass) deadline() time.Time { return time.Time{} }
func (l *listenerClass) tick(time.Time)      {}
func (l *listenerClass) stopped()            {}

func (l *listenerClass) wakeup() <-chan struct{} { return l.ready }

// woke handles a watcher that has ended: a connection waits.
func (l *listenerClass) woke(now time.Time) {
	w := l.watcher
	if w == nil {
		return
	}
	select {
	case <-w.done:
	default:
		return // a stale wake-up
	}
	l.watcher = nil
	closeFD(w.cancel)
	switch {
	case !l.sv.active() || len(l.sv.instances) > 0:
	case w.saw:
		l.waiting = true
	default:
		l.watch() // poll(2) failed: wait again
	}
	l.sv.reconcile(now)
}

// watch starts a watcher unless one runs or an instance runs.
func (l *listenerClass) watch() {
	if l.watcher != nil || l.lfd < 0 || l.waiting || len(l.sv.instances) > 0 {
		return
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		l.sv.log.Error().Err(err).Msg("cannot wait for connections")
		return
	}
	w := &watcher{cancel: p[1], done: make(chan struct{})}
	l.watcher = w
	lfd, ready := l.lfd, l.ready
	go func() {
		fds := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}, {Fd: int32(p[0]), Events: unix.POLLIN}}
		var err error
		for {
			if _, err = unix.Poll(fds, -1); !errors.Is(err, unix.EINTR) {
				break
			}
		}
		unix.Close(p[0])
		cancelled := err == nil && fds[1].Revents != 0
		w.saw = err == nil && !cancelled && fds[0].Revents != 0
		// done before the wake-up: the service takes a wake-up whose
		// watcher is not done yet for a stale one, and would miss the
		// connection.
		close(w.done)
		if !cancelled {
			nudge(ready)
		}
	}()
}

// stopWatching ends the watcher, if any, and waits for it: it wakes at
// once from the cancel pipe, and the wait is bounded all the same.
func (l *listenerClass) stopWatching() {
	w := l.watcher
	if w == nil {
		return
	}
	l.watcher = nil
	unix.Write(w.cancel, []byte{0})
	select {
	case <-w.done:
	case <-time.After(helperPatience):
		l.sv.log.Error().Msg("connection watcher did not end")
	}
	closeFD(w.cancel)
}

func (l *listenerClass) update(old *conffmt.Service, now time.Time) bool {
	c := &l.sv.conf
	moved := old.Addr != c.Addr || old.Port != c.Port || old.Backlog != c.Backlog
	if moved {
		l.sv.closeSockets()
	}
	return moved || !inPlace(*old, *c)
}

func (l *listenerClass) status(*Status, time.Time) {}

func (l *listenerClass) freeze() { l.stopWatching() }

func (l *listenerClass) thaw() {
	if l.sv.active() {
		l.watch()
	}
}

func (l *listenerClass) snapshot(ss *ServiceState) {
	if l.lfd >= 0 {
		ss.Socket = dupFD(l.lfd, l.sv)
	}
}

func (l *listenerClass) restore(ss *ServiceState, _ time.Time) error {
	if ss.Socket >= 0 {
		l.lfd = ss.Socket
	}
	return nil
}

func (l *listenerClass) idle() bool { return l.watcher == nil }

// shimArgv is the argv that makes metad's binary the shim for sp.
func (sp *spec) shimArgv() []string {
	argv := make([]string, 0, 2+len(sp.argv))
	argv = append(argv, ShimArgv0, sp.path)
	return append(argv, sp.argv...)
}
