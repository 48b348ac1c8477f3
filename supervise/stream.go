package supervise

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// conn is an accepted connection on its way to a stream instance.
type conn struct {
	fd     int
	remote syscall.Sockaddr
}

// acceptor is the goroutine that accepts on an enabled stream service's
// listening socket. It accepts only while it holds a slot, so at max
// instances connections wait in the kernel's backlog. Stopping it leaves
// the socket open, so that the service can change its max or hand the
// socket to a new metad without refusing anyone.
type acceptor struct {
	stop  chan struct{}
	ended chan struct{} // closed when the goroutine has returned
}

// openSocket gets the service's listening socket: an inherited one that
// matches its endpoint, or a new one.
func (sv *service) openSocket() (int, error) {
	if fd := sv.inheritedFD; fd >= 0 {
		sv.inheritedFD = -1
		sv.log.Info().Stringer("addr", sv.endpoint()).Msg("using inherited socket")
		return fd, nil
	}
	return listen(sv.endpoint(), sv.conf.Backlog)
}

func (sv *service) endpoint() Endpoint {
	return Endpoint{Addr: sv.conf.Addr, Port: sv.conf.Port}
}

// openStream opens the stream socket, if it is not open, and starts the
// acceptor, if it is not running.
func (sv *service) openStream() error {
	if sv.sock == nil {
		fd, err := sv.openSocket()
		if err != nil {
			return err
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return fmt.Errorf("cannot make socket %s non-blocking: %w", sv.endpoint(), err)
		}
		sv.sock = os.NewFile(uintptr(fd), sv.endpoint().String())
		sv.log.Info().Stringer("addr", sv.endpoint()).Msg("listening")
	}
	if sv.acceptor == nil {
		a := &acceptor{stop: make(chan struct{}), ended: make(chan struct{})}
		sv.acceptor = a
		go a.run(sv.sock, sv.slots, sv.conns)
	}
	return nil
}

// stopAccepting stops the acceptor and waits for it, serving the
// connections it had accepted meanwhile. The socket stays open.
func (sv *service) stopAccepting() {
	a := sv.acceptor
	if a == nil {
		return
	}
	sv.acceptor = nil
	close(a.stop)
	sv.sock.SetReadDeadline(time.Unix(1, 0)) // wakes a pending accept
	for {
		select {
		case c := <-sv.conns:
			sv.serve(time.Now(), c)
			continue
		case <-a.ended:
		}
		break
	}
	sv.sock.SetReadDeadline(time.Time{})
}

// closeStream stops the acceptor and closes the socket: clients are
// refused from now on.
func (sv *service) closeStream() {
	if sv.sock == nil {
		return
	}
	sv.stopAccepting()
	sv.sock.Close()
	sv.sock = nil
	sv.log.Info().Stringer("addr", sv.endpoint()).Msg("closed socket")
}

// resizeSlots gives a stream service a new max without closing its
// socket: the slots in use carry over, up to the new max.
func (sv *service) resizeSlots(max int) {
	running := sv.acceptor != nil
	sv.stopAccepting()
	used := len(sv.instances) + len(sv.held)
	sv.slots = make(chan struct{}, max)
	for range min(used, max) {
		sv.slots <- struct{}{}
	}
	if running {
		if err := sv.openStream(); err != nil {
			sv.log.Error().Err(err).Msg("cannot accept")
		}
	}
}

// run accepts connections and hands them to the service goroutine, one per
// free slot, until stop is closed or the socket is.
func (a *acceptor) run(sock *os.File, slots chan struct{}, conns chan<- conn) {
	defer close(a.ended)
	rc, err := sock.SyscallConn()
	if err != nil {
		return
	}
	for {
		select {
		case slots <- struct{}{}:
		case <-a.stop:
			return
		}
		var c conn
		var aerr error
		err := rc.Read(func(fd uintptr) bool {
			// syscall's Accept4, not unix's: that one asks getsockopt for
			// the protocol of every connection.
			var sa syscall.Sockaddr
			c.fd, sa, aerr = syscall.Accept4(int(fd), syscall.SOCK_CLOEXEC)
			c.remote = sa
			return !errors.Is(aerr, syscall.EAGAIN)
		})
		if err == nil {
			err = aerr
		}
		if err != nil {
			<-slots
			select {
			case <-a.stop:
				return
			default:
			}
			if errors.Is(err, os.ErrClosed) {
				return
			}
			// ECONNABORTED, EMFILE...: go on with the next connection.
			continue
		}
		// The service goroutine takes every accepted connection, even
		// while it stops this acceptor: none is dropped.
		conns <- c
	}
}

// serve starts a stream instance for an accepted connection: the
// connection is its fd 0 and 1, with the ucspi-tcp environment. The slot
// taken for it is given back when the instance ends (later, if it
// crashed).
func (sv *service) serve(now time.Time, c conn) {
	defer unix.Close(c.fd)
	if !sv.enabled || sv.quitting {
		sv.releaseSlot()
		return
	}
	stderr := sv.sup.stderr
	var out *output
	if sv.conf.Watch {
		var err error
		if out, err = newOutput("stderr"); err != nil {
			sv.log.Error().Err(err).Msg("cannot watch output")
			sv.releaseSlot()
			return
		}
		stderr = out.writeFD(0)
	}
	remoteIP, remotePort := sockaddrIP(c.remote)
	localIP, localPort := sv.conf.Addr, sv.conf.Port
	if !localIP.IsValid() || localIP.IsUnspecified() {
		if sa, err := syscall.Getsockname(c.fd); err == nil {
			localIP, localPort = sockaddrIP(sa)
		}
	}
	env := make([]string, 0, len(sv.spec.env)+5)
	env = append(env, sv.spec.env...)
	env = append(env,
		"PROTO=TCP",
		"TCPREMOTEIP="+remoteIP.String(),
		"TCPREMOTEPORT="+strconv.Itoa(remotePort),
		"TCPLOCALIP="+localIP.String(),
		"TCPLOCALPORT="+strconv.Itoa(localPort),
	)
	p := sv.spec.proc([]int{c.fd, c.fd, stderr})
	p.Env = env
	pid, err := sv.sup.cfg.Procs.Spawn(p, sv.onExit)
	if out != nil {
		out.closeWriters()
	}
	if err != nil {
		if out != nil {
			out.closeReaders()
		}
		sv.log.Error().Err(err).Str("remote", remoteIP.String()).Msg("cannot start")
		sv.crashes = NextCrashes(sv.crashes, Crashed)
		sv.holdSlot(now, Delay(sv.crashes, sv.conf.Backoff))
		return
	}
	sv.instances[pid] = &instance{pid: pid, pgid: pid, started: now}
	if out != nil {
		sv.watchOutput(out, pid)
	}
	sv.log.Debug().Int("pid", pid).Str("remote", remoteIP.String()).Int("port", remotePort).Msg("started")
}

// releaseSlot gives one slot back to the acceptor.
func (sv *service) releaseSlot() {
	select {
	case <-sv.slots:
	default:
	}
}

// holdSlot keeps a slot taken until now+d: a crashed stream instance
// throttles its service instead of letting it spin.
func (sv *service) holdSlot(now time.Time, d time.Duration) {
	if d <= 0 {
		sv.releaseSlot()
		return
	}
	sv.held = append(sv.held, now.Add(d))
	sv.log.Warn().Int("crashes", sv.crashes).Stringer("delay", d).Msg("backoff")
}

// releaseHeld gives back the slots whose hold has passed.
func (sv *service) releaseHeld(now time.Time) {
	kept := sv.held[:0]
	for _, t := range sv.held {
		if now.Before(t) {
			kept = append(kept, t)
			continue
		}
		sv.releaseSlot()
	}
	sv.held = kept
}

// streamEnded handles the end of a stream instance.
func (sv *service) streamEnded(now time.Time, outcome Outcome, asked bool) {
	if !asked && outcome != Clean {
		sv.restarts++
	}
	sv.crashes = NextCrashes(sv.crashes, outcome)
	if outcome == Crashed {
		sv.holdSlot(now, Delay(sv.crashes, sv.conf.Backoff))
		return
	}
	sv.releaseSlot()
}
