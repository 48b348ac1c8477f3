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
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", rawURL, err)
	}
	req.Header.Set("User-Agent", "metad")
	resp, err := client().Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("GET %s: %w", rawURL, cause(ctx, err, timeout))
	}
	defer resp.Body.Close()
	// The answer is the status; the body is read (a little) only so
	// that the server sees a client that took its answer.
	io.Copy(io.Discard, io.LimitReader(resp.Body, bodyLimit))
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("GET %s: %s", rawURL, resp.Status)
	}
	return nil
}

// client returns an HTTP client for one probe: nothing is shared between
// probes, and no connection outlives one.
func client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:              nil, // a check asks the service itself, never through HTTP_PROXY
			DialContext:        (&net.Dialer{}).DialContext,
			DisableKeepAlives:  true,
			DisableCompression: true,
			TLSClientConfig:    &tls.Config{InsecureSkipVerify: true},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
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
