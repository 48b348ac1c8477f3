// Package metrics serves metad's figures to Prometheus: the state and
// counters of every service and metad's own process, in the text
// exposition format 0.0.4, over HTTP at /metrics (metad --metrics).
//
// It owns the format and the HTTP server. It does not own the figures:
// it asks the services through Lister at each scrape and keeps nothing
// between scrapes. It uses the standard library only.
package metrics

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"metad/supervise"
)

// Lister lists the services; netctl.Controller and *supervise.Supervisor
// implement it. List must be bounded in time (supervise bounds each
// request to a service).
type Lister interface {
	List(names ...string) ([]supervise.Status, error)
}

// ContentType is the media type of the text exposition format 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Bounds of the HTTP server: a client gets a few seconds to send its
// request, and a scrape waits at most scrapeTimeout for the services.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	scrapeTimeout     = 10 * time.Second
	writeTimeout      = scrapeTimeout + 5*time.Second
	idleTimeout       = time.Minute
	maxHeaderBytes    = 8 << 10
	shutdownTimeout   = time.Second
)

// Server serves the metrics. Fill in the fields, then call Run; the
// fields must not change afterwards.
type Server struct {
	Addr     string // where to listen: host:port, the host given (see CheckAddr)
	Services Lister // the services
	Version  string // metad's version, for metad_build_info
	Log      zerolog.Logger
	Proc     string // the procfs mount to read metad's own figures from; "" means /proc

	once sync.Once
	busy chan struct{} // holds a token while the services are being listed
}

// CheckAddr checks a --metrics address: a host and a port, the host
// given explicitly, so that metrics are never served on every interface
// by accident (0.0.0.0 or [::] say so on purpose).
func CheckAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want ADDR:PORT, e.g. 127.0.0.1:9100")
	}
	if host == "" {
		return fmt.Errorf("give an address, e.g. 127.0.0.1:%s", cmp.Or(port, "9100"))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q is not a port", port)
	}
	return nil
}

// Run listens on s.Addr and serves until ctx is done, then closes the
// listener and the connections and returns; a scrape still waiting for
// the services then ends on its own, within its bound. When it cannot
// listen it logs the error and returns at once: metad carries on without
// metrics.
func (s *Server) Run(ctx context.Context) {
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		s.Log.Error().Err(fmt.Errorf("cannot listen on %q: %w", s.Addr, err)).Msg("metrics are off")
		return
	}
	s.Log.Info().Str("addr", ln.Addr().String()).Msg("metrics listening")
	s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done, then closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(debugWriter{s.Log}, "", 0),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		s.Log.Error().Err(err).Msg("metrics are off")
		return
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-served
}

// ServeHTTP answers GET and HEAD of /metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/metrics" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), scrapeTimeout)
	defer cancel()
	body, err := s.scrape(ctx)
	if err != nil {
		s.Log.Warn().Err(err).Msg("cannot serve metrics")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// errBusy is returned when the services did not answer within a scrape's
// bound.
var errBusy = errors.New("the services did not answer in time")

// scrape lists the services and returns the exposition. One listing runs
// at a time, whatever the number of scrapes: a scrape waits for its turn
// and for the listing until ctx is done. A listing given up on finishes
// in the background within the bounds of List.
func (s *Server) scrape(ctx context.Context) ([]byte, error) {
	s.once.Do(func() { s.busy = make(chan struct{}, 1) })
	select {
	case s.busy <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("cannot list services: %w", errBusy)
	}
	type listed struct {
		svcs []supervise.Status
		err  error
	}
	res := make(chan listed, 1)
	go func() {
		defer func() { <-s.busy }()
		svcs, err := s.Services.List()
		res <- listed{svcs, err}
	}()
	var l listed
	select {
	case l = <-res:
	case <-ctx.Done():
		return nil, fmt.Errorf("cannot list services: %w", errBusy)
	}
	if l.err != nil {
		return nil, fmt.Errorf("cannot list services: %w", l.err)
	}
	snap := &Snapshot{Services: l.svcs, Version: s.Version, GoVersion: runtime.Version(), Process: readProcess(cmp.Or(s.Proc, "/proc"))}
	var b bytes.Buffer
	if err := Write(&b, snap); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// debugWriter logs the HTTP server's complaints (a client's bad request,
// a failed accept) at debug: they are about clients, not about metad.
type debugWriter struct{ log zerolog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
