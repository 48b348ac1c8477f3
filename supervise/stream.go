package supervise

import (
	"errors"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// conn is an accepted connection on its way to a stream instance.
type conn struct {
	fd     int
	remote unix.Sockaddr
}

// acceptor owns the listening socket of an enabled stream service and the
// goroutine that accepts on it. It accepts only while it holds a slot, so
// at max instances connections wait in the kernel's backlog.
type acceptor struct {
	file  *os.File // the listening socket, in Go's netpoller
	stop  chan struct{}
	ended chan struct{} // closed when the goroutine has returned
}

// openSocket gets the service's listening socket: an inherited one that
// matches its endpoint, or a new one.
func (sv *service) openSocket() (int, error) {
	if fd := sv.sup.inherited.take(sv.endpoint()); fd >= 0 {
		sv.log.Info().Stringer("addr", sv.endpoint()).Msg("using inherited socket")
		return fd, nil
	}
	return listen(sv.endpoint(), sv.conf.Backlog)
}

func (sv *service) endpoint() Endpoint {
	return Endpoint{Addr: sv.conf.Addr, Port: sv.conf.Port}
}

// startAccepting opens the socket and starts the accept goroutine.
func (sv *service) startAccepting() error {
	fd, err := sv.openSocket()
	if err != nil {
		return err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	a := &acceptor{
		file:  os.NewFile(uintptr(fd), sv.endpoint().String()),
		stop:  make(chan struct{}),
		ended: make(chan struct{}),
	}
	sv.acceptor = a
	go a.run(sv.slots, sv.conns)
	sv.log.Info().Stringer("addr", sv.endpoint()).Msg("listening")
	return nil
}

// stopAccepting closes the socket and waits for the accept goroutine.
func (sv *service) stopAccepting() {
	a := sv.acceptor
	if a == nil {
		return
	}
	sv.acceptor = nil
	close(a.stop)
	a.file.Close()
	<-a.ended
	sv.log.Info().Stringer("addr", sv.endpoint()).Msg("closed socket")
}

// run accepts connections and hands them to the service goroutine, one per
// free slot.
func (a *acceptor) run(slots chan struct{}, conns chan<- conn) {
	defer close(a.ended)
	rc, err := a.file.SyscallConn()
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
			c.fd, c.remote, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC)
			return !errors.Is(aerr, unix.EAGAIN)
		})
		if err == nil {
			err = aerr
		}
		if err != nil {
			<-slots
			if errors.Is(err, os.ErrClosed) {
				return
			}
			// ECONNABORTED, EMFILE...: try again with the next connection,
			// unless the socket is being closed.
			select {
			case <-a.stop:
				return
			default:
				continue
			}
		}
		select {
		case conns <- c:
		case <-a.stop:
			unix.Close(c.fd)
			<-slots
			return
		}
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
		if sa, err := unix.Getsockname(c.fd); err == nil {
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
		out.start(sv.log.With().Int("pid", pid).Logger())
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
