package netctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// The local socket speaks one request and one reply per connection, each a
// line of JSON (docs/protocol.md). The limits keep a slow or broken peer
// from holding metad.
const (
	maxLocalRequest = 64 << 10 // bytes of a request line
	maxLocalReply   = 64 << 20 // bytes of a reply line, as metac reads it
	localReadLimit  = 5 * time.Second
	localWriteLimit = 10 * time.Second
	// maxLocalConns is how many connections are served at once; the
	// next ones wait in the listen backlog.
	maxLocalConns = 16
)

// Local is the listening control socket.
type Local struct {
	l    *net.UnixListener
	path string
	ino  uint64 // of the socket file, to remove only our own
	dev  uint64

	gate gate // Quiesce
}

// ListenLocal creates the control socket at path, mode 0600. A socket
// left at path by a metad that is gone is replaced; one that accepts
// connections makes ListenLocal fail, and so does anything else at path.
//
// The socket is made in a new directory of mode 0700 next to path, made
// 0600 there and linked into place, so it is never reachable with a wider
// mode, and a socket another metad made meanwhile is not replaced.
func ListenLocal(path string) (*Local, error) {
	if err := clearStale(path); err != nil {
		return nil, err
	}
	// A bare root filesystem (FROM scratch) has no /run.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("cannot create control socket %q: %w", path, err)
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".metad-sock-")
	if err != nil {
		return nil, fmt.Errorf("cannot create control socket %q: %w", path, err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("cannot create control socket %q: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("cannot create control socket %q: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil {
		l.Close()
		return nil, fmt.Errorf("cannot create control socket %q: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		l.Close()
		return nil, fmt.Errorf("cannot create control socket %q: %w", path, err)
	}
	return &Local{l: l, path: path, ino: st.Ino, dev: uint64(st.Dev)}, nil
}

// LocalFromFD takes over a control socket that a previous image of metad
// handed over (re-exec): fd listens at path. No connection is refused
// while the socket changes hands.
func LocalFromFD(fd int, path string) (*Local, error) {
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("cannot take over control socket %q: %w", path, err)
	}
	l, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("cannot take over control socket %q: not a unix socket", path)
	}
	l.SetUnlinkOnClose(false)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		l.Close()
		return nil, fmt.Errorf("cannot take over control socket %q: %w", path, err)
	}
	return &Local{l: l, path: path, ino: st.Ino, dev: uint64(st.Dev)}, nil
}

// Dup returns a duplicate of the listening socket without close-on-exec,
// to hand it to the next image of metad (re-exec).
func (l *Local) Dup() (int, error) { return dupSocket(l.l) }

// dupSocket returns a duplicate of c's descriptor without close-on-exec,
// to hand it to the next image of metad (re-exec).
func dupSocket(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.Dup(int(fd)) }); err != nil {
		return -1, err
	}
	return nfd, derr
}

// clearStale removes a socket at path that nothing listens on.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot create control socket %q: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("cannot create control socket %q: the file exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("cannot create control socket %q: another metad is listening on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot create control socket %q: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot remove stale control socket %q: %w", path, err)
	}
	return nil
}

// Path returns the socket's path.
func (l *Local) Path() string { return l.path }

// Quiesce stops taking connections and waits until every connection taken
// has been answered, or until ctx is done (then it returns ctx's error,
// quiesced all the same). Connections made meanwhile wait in the socket's
// backlog for whoever takes them next: this process after resume, or the
// next image of metad, which inherits the socket (re-exec). So no request
// is cut off by the exec. resume takes connections again; call it once.
// It needs ServeLocal to be running.
func (l *Local) Quiesce(ctx context.Context) (resume func(), err error) {
	return l.gate.quiesce(ctx,
		func() { l.l.SetDeadline(time.Now()) }, // wakes a pending accept
		func() { l.l.SetDeadline(time.Time{}) })
}

// close stops listening and removes the socket file, unless another metad
// has replaced it meanwhile.
func (l *Local) close() {
	l.l.Close()
	var st unix.Stat_t
	if unix.Lstat(l.path, &st) == nil && st.Ino == l.ino && uint64(st.Dev) == l.dev {
		os.Remove(l.path)
	}
}

// ServeLocal serves requests on l with h until ctx is done, then closes l,
// removes its socket file and returns once every connection is finished.
// Peers that are neither root nor metad's own user are refused and logged.
// See Quiesce for a pause.
func ServeLocal(ctx context.Context, l *Local, h *Handler, log zerolog.Logger) {
	var mu sync.Mutex // guards open
	open := make(map[*net.UnixConn]bool)
	// At the end, connections still open are cut short, so that a slow
	// peer does not delay metad's exit.
	stop := context.AfterFunc(ctx, func() {
		l.l.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range open {
			c.SetDeadline(time.Now())
		}
	})
	defer stop()
	slots := make(chan struct{}, maxLocalConns)
	self := uint32(os.Geteuid())
	for {
		l.gate.hold(ctx)
		if ctx.Err() != nil {
			break
		}
		conn, err := l.l.AcceptUnix()
		if err != nil {
			if os.IsTimeout(err) { // Quiesce (or a resume that came first)
				continue
			}
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Error().Err(err).Msg("cannot accept control connection")
				pause(ctx)
				continue
			}
			break
		}
		slots <- struct{}{}
		mu.Lock()
		open[conn] = true
		mu.Unlock()
		l.gate.begin()
		go func() {
			defer l.gate.end()
			serveConn(ctx, conn, h, self, log)
			mu.Lock()
			delete(open, conn)
			mu.Unlock()
			<-slots
		}()
	}
	<-l.gate.answered()
	l.close()
}

// serveConn answers the one request of a local connection and closes it.
func serveConn(ctx context.Context, conn *net.UnixConn, h *Handler, self uint32, log zerolog.Logger) {
	defer conn.Close()
	cred, err := peerCred(conn)
	if err != nil {
		log.Warn().Err(err).Msg("refused control connection")
		return
	}
	uid := cred.Uid
	extend(ctx, conn, localReadLimit)
	if !peerAllowed(uid, self) {
		log.Warn().Uint32("uid", uid).Int32("pid", cred.Pid).Msg("refused control connection")
		writeLine(conn, h.Fail(fmt.Errorf("permission denied: uid %d may not control metad", uid)))
		return
	}
	var req Request
	if err := readLine(conn, maxLocalRequest, &req); err != nil {
		log.Warn().Err(err).Uint32("uid", uid).Msg("bad control request")
		writeLine(conn, h.Fail(fmt.Errorf("bad request: %w", err)))
		return
	}
	reply, then := h.answer(log.With().Uint32("uid", uid).Logger(), req, ViaLocal)
	extend(ctx, conn, localWriteLimit)
	if err := writeLine(conn, reply); err != nil {
		log.Warn().Err(err).Str("cmd", req.Command).Msg("cannot send control reply")
	}
	if then != nil {
		then()
	}
}

// extend gives conn d from now, unless ctx is done: then the cut-off of
// ServeLocal stands.
func extend(ctx context.Context, conn net.Conn, d time.Duration) {
	conn.SetDeadline(time.Now().Add(d))
	if ctx.Err() != nil {
		conn.SetDeadline(time.Now())
	}
}

// peerCred returns the credentials of the process at the other end of
// conn, as they were when it connected.
func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("cannot read peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("cannot read peer credentials: %w", err)
	}
	if cerr != nil {
		return nil, fmt.Errorf("cannot read peer credentials: %w", cerr)
	}
	return cred, nil
}

// pause waits a little after a failed accept or read, which may fail
// again at once (out of descriptors), so that the loop does not spin.
func pause(ctx context.Context) {
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// peerAllowed says whether a peer with user id uid may control a metad
// running as user self: root and that user may.
func peerAllowed(uid, self uint32) bool {
	return uid == 0 || uid == self
}

// writeLine writes v as one line of JSON.
func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// CallLocal sends req to the metad listening on the control socket at
// path and returns its reply, all within timeout. Its error does not name
// path: the caller does. A reply that reports a failure is not an error.
func CallLocal(path string, req Request, timeout time.Duration) (*Reply, error) {
	conn, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err // without the path, which the caller names
		}
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	werr := writeLine(conn, req)
	// A metad that refuses the peer answers without reading the request,
	// and may close before the request is written: its answer still
	// counts.
	var r Reply
	if err := readLine(conn, maxLocalReply, &r); err != nil {
		if werr != nil {
			return nil, werr
		}
		return nil, err
	}
	return &r, nil
}

// readLine reads one line of JSON of at most limit bytes into v.
func readLine(r io.Reader, limit int64, v any) error {
	line, err := bufio.NewReader(io.LimitReader(r, limit)).ReadBytes('\n')
	if errors.Is(err, io.EOF) {
		if len(line) == 0 {
			return errors.New("connection closed without a message")
		}
		return fmt.Errorf("message over %d bytes or without an end of line", limit)
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("bad message: %w", err)
	}
	return nil
}
