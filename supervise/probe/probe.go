// Package probe runs the tests of a service from outside, once each:
// the probes of ready=tcp:, ready=exec:, check=tcp:, check=http(s):// and
// check=exec: (conffmt.Probe). Run returns nil for success: a TCP
// connection made, an HTTP answer 2xx or 3xx, a command's exit status 0.
//
// It does not repeat probes, count failures or decide what they mean:
// the supervisor does, with its timers. It starts commands only through
// the supervisor's reaper (Spawner) and never waits for a process
// itself.
package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"metad/conffmt"
	"metad/init"
)

// Spawner starts a process and tells when it ends: initsys.Reaper's
// Spawn (the method set of supervise.Procs).
type Spawner interface {
	// Spawn starts p; done is called once, without blocking, when it ends.
	Spawn(p *initsys.Proc, done func(initsys.Exit)) (int, error)
}

// Exec is how the command of an exec: probe is started. The zero value
// will do for the other probes.
type Exec struct {
	// Spawner starts the command; it must be set for an exec: probe.
	Spawner Spawner
	// Proc is the command's process as the service would have it: its
	// Env (where PATH is searched for a command written without a
	// slash; nil: metad's environment), Dir, Cred, Cgroup, Umask, Nice
	// and Rlimits are used as they are. Run sets Path, Argv and Files
	// (standard input /dev/null, standard output and error a pipe),
	// starts the command in a session of its own and leaves out
	// Foreground, Signals and Pdeathsig.
	Proc initsys.Proc
}

// bodyLimit is how much of an HTTP answer's body is read before the
// connection is closed: enough for a health endpoint's text.
const bodyLimit = 4 << 10

// Run runs probe p once and returns nil if it succeeds, or an error that
// says what failed:
//
//	cannot connect to 127.0.0.1:8080: connection refused
//	GET http://127.0.0.1:8080/health: 500 Internal Server Error
//	GET http://127.0.0.1:8080/health: no answer in 5s
//	exec:check.sh --quick: exit status 1: <the last line of its output>
//
// ctx's deadline is the probe's timeout; an error past it wraps
// context.DeadlineExceeded, one after ctx was cancelled wraps
// context.Canceled. Run blocks until the probe is done. An exec: probe
// is done when its command has ended: past the deadline, or when ctx is
// cancelled, the command's whole process group is killed with SIGKILL.
// Once the command has ended, what is left of its process group is
// killed too, so that a probe leaves nothing behind. Run returns at most
// 2 seconds (killPatience) after the command's end or the kill, even if
// the command has not ended by then or something outside its group holds
// its output open.
//
// An HTTP probe asks with GET and "User-Agent: metad", on a connection
// of its own that it closes after reading at most 4 KiB of the answer.
// It follows no redirect (a 3xx is a success), uses no proxy, and does
// not verify an https:// server's certificate: it checks that the
// service answers, not who it is.
//
// Run is safe for concurrent use.
func Run(ctx context.Context, p conffmt.Probe, x Exec) error {
	var timeout time.Duration
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d).Round(time.Millisecond)
	}
	switch p.Kind {
	case conffmt.ProbeTCP:
		return connect(ctx, p.Addr.String(), timeout)
	case conffmt.ProbeHTTP:
		return get(ctx, p.URL, timeout)
	case conffmt.ProbeExec:
		return run(ctx, p, x, timeout)
	default:
		return fmt.Errorf("cannot run probe %q: unknown kind %d", p.Text, p.Kind)
	}
}

func connect(ctx context.Context, addr string, timeout time.Duration) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot connect to %s: %w", addr, cause(ctx, err, timeout))
	}
	c.Close()
	return nil
}

func get(ctx context.Context, rawURL string, timeout time.Duration) error {
	status, err := ask(ctx, rawURL)
	if err != nil {
		return fmt.Errorf("GET %s: %w", rawURL, cause(ctx, err, timeout))
	}
	if code := status.code; code < 200 || code > 399 {
		return fmt.Errorf("GET %s: %s", rawURL, status.text)
	}
	return nil
}

// httpStatus is the status line of an HTTP answer.
type httpStatus struct {
	code int
	text string // "500 Internal Server Error"
}

// ask sends one GET for rawURL on a connection of its own and reads the
// status line of the answer, then at most bodyLimit bytes more, so that
// the server sees a client that took its answer; it closes the
// connection. It is HTTP/1.1 with "Connection: close", which every
// server speaks: the checks need a status, not a client that follows
// redirects, pools connections or goes through a proxy.
func ask(ctx context.Context, rawURL string) (httpStatus, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return httpStatus{}, err
	}
	secure := u.Scheme == "https"
	if !secure && u.Scheme != "http" {
		return httpStatus{}, fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if secure {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return httpStatus{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if secure {
		c = tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: u.Hostname()})
	}
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: metad\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return httpStatus{}, err
	}
	br := bufio.NewReaderSize(c, 512)
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("connection closed before an answer")
		}
		return httpStatus{}, err
	}
	st, err := parseStatus(string(line))
	if err != nil {
		return httpStatus{}, err
	}
	io.CopyN(io.Discard, br, bodyLimit)
	return st, nil
}

// parseStatus reads an HTTP/1.x status line: "HTTP/1.1 200 OK\r\n".
func parseStatus(line string) (httpStatus, error) {
	line = strings.TrimRight(line, "\r\n")
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") {
		return httpStatus{}, fmt.Errorf("not an HTTP answer: %q", truncate(line, 64))
	}
	code, _, _ := strings.Cut(rest, " ")
	n, err := strconv.Atoi(code)
	if err != nil || len(code) != 3 || n < 100 {
		return httpStatus{}, fmt.Errorf("bad HTTP status line: %q", truncate(line, 64))
	}
	return httpStatus{code: n, text: strings.TrimSpace(rest)}, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// noAnswer is the error of a probe that ran out of time.
type noAnswer time.Duration

func (e noAnswer) Error() string { return "no answer in " + time.Duration(e).String() }
func (e noAnswer) Unwrap() error { return context.DeadlineExceeded }

// cause returns what a failed connection or request says to a reader:
// "no answer in 5s" when the time ran out, the errno without its layers
// of "dial tcp" and "connect:", or else err.
func cause(ctx context.Context, err error, timeout time.Duration) error {
	deadline, ok := ctx.Deadline()
	switch {
	// The dialer's own deadline, taken from ctx, may end it a moment
	// before ctx itself is done.
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), ok && !time.Now().Before(deadline):
		return noAnswer(timeout)
	case ctx.Err() != nil:
		return ctx.Err()
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	var operr *net.OpError
	if errors.As(err, &operr) {
		var serr *os.SyscallError
		if errors.As(operr.Err, &serr) {
			return serr.Err
		}
		return operr.Err
	}
	return err
}
