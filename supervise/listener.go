package supervise

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
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

// watcher waits, in a goroutine blocked in poll(2), for a connection on a
// listener's socket while no instance runs. metad does not accept it: the
// program it starts will.
type watcher struct {
	cancel int // write end of a pipe that wakes the poll
	done   chan struct{}
}

// openListener opens the listener's socket if it is not open.
func (sv *service) openListener() error {
	if sv.lfd >= 0 {
		return nil
	}
	fd, err := sv.openSocket()
	if err != nil {
		return err
	}
	sv.lfd = fd
	sv.log.Info().Stringer("addr", sv.endpoint()).Msg("listening")
	return nil
}

// closeListener stops the watcher and closes metad's copy of the socket;
// a running instance keeps its own.
func (sv *service) closeListener() {
	sv.stopWatching()
	if sv.lfd >= 0 {
		unix.Close(sv.lfd)
		sv.lfd = -1
		sv.log.Info().Stringer("addr", sv.endpoint()).Msg("closed socket")
	}
}

// watch starts a watcher unless one runs. It sends on sv.ready when a
// connection is waiting.
func (sv *service) watch() error {
	if sv.watcher != nil || sv.lfd < 0 {
		return nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("cannot make a pipe: %w", err)
	}
	w := &watcher{cancel: p[1], done: make(chan struct{})}
	sv.watcher = w
	lfd, ready := sv.lfd, sv.ready
	go func() {
		defer close(w.done)
		defer unix.Close(p[0])
		fds := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}, {Fd: int32(p[0]), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || fds[1].Revents != 0 {
				return
			}
			if fds[0].Revents != 0 {
				select {
				case ready <- w:
				default:
				}
				return
			}
		}
	}()
	return nil
}

// stopWatching ends the watcher, if any, and waits for it.
func (sv *service) stopWatching() {
	w := sv.watcher
	if w == nil {
		return
	}
	sv.watcher = nil
	unix.Write(w.cancel, []byte{0})
	<-w.done
	unix.Close(w.cancel)
}

// reconcileListener opens the socket and starts the program when a
// connection waits (or at once with min=1), after any backoff.
func (sv *service) reconcileListener(now time.Time) {
	if err := sv.openListener(); err != nil {
		sv.socketFailed(now, err)
		return
	}
	if sv.live() > 0 {
		return
	}
	if (sv.conf.Min > 0 || sv.connWaiting) && !now.Before(sv.holdUntil) {
		sv.connWaiting = false
		if sv.startAuto(now, "connection") {
			return
		}
	}
	if !sv.connWaiting {
		if err := sv.watch(); err != nil {
			sv.log.Error().Err(err).Msg("cannot wait for connections")
		}
	}
}

// socketFailed backs off after a socket could not be opened, so that a
// port in use is retried at the backoff times while other services run.
func (sv *service) socketFailed(now time.Time, err error) {
	sv.crashes = NextCrashes(sv.crashes, Crashed)
	delay := Delay(sv.crashes, sv.conf.Backoff)
	sv.holdUntil = now.Add(delay)
	sv.log.Error().Err(err).Stringer("delay", delay).Msg("cannot listen")
}

// shimArgv is the argv that makes metad's binary the shim for sp.
func (sp *spec) shimArgv() []string {
	argv := make([]string, 0, 2+len(sp.argv))
	argv = append(argv, ShimArgv0, sp.path)
	return append(argv, sp.argv...)
}
