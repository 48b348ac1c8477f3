package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"metad/conffmt"
	"metad/supervise"
)

// fakeServices answers List with its services, or blocks until release
// is closed when release is set.
type fakeServices struct {
	svcs    []supervise.Status
	err     error
	release chan struct{}
	calls   atomic.Int32
	active  atomic.Int32
	most    atomic.Int32
}

func (f *fakeServices) List(names ...string) ([]supervise.Status, error) {
	f.calls.Add(1)
	n := f.active.Add(1)
	defer f.active.Add(-1)
	for m := f.most.Load(); n > m && !f.most.CompareAndSwap(m, n); m = f.most.Load() {
	}
	if f.release != nil {
		<-f.release
	}
	return f.svcs, f.err
}

func serve(t *testing.T, s *Server, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	return w
}

func TestServeHTTP(t *testing.T) {
	s := &Server{Version: "9.9", Log: zerolog.Nop(), Services: &fakeServices{svcs: []supervise.Status{
		{Name: "web", Class: conffmt.Daemon, Enabled: true, State: "running", Restarts: 5},
	}}}
	w := serve(t, s, http.MethodGet, "/metrics")
	if w.Code != http.StatusOK {
		t.Fatalf("GET /metrics: got %d, want 200: %s", w.Code, w.Body)
	}
	if got := w.Header().Get("Content-Type"); got != ContentType {
		t.Errorf("content type: got %q, want %q", got, ContentType)
	}
	for _, want := range []string{
		`metad_service_restarts_total{service="web"} 5`,
		`metad_build_info{version="9.9",goversion="go`,
		"\nprocess_open_fds ", "\nprocess_resident_memory_bytes ", "\nprocess_start_time_seconds ", "\ngo_goroutines ",
	} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("no %q in:\n%s", want, w.Body)
		}
	}
	if got := w.Header().Get("Content-Length"); got != strconv.Itoa(w.Body.Len()) {
		t.Errorf("content length: got %s, want %d", got, w.Body.Len())
	}

	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodHead, "/metrics", http.StatusOK},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodPut, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "/metrics/x", http.StatusNotFound},
	} {
		w := serve(t, s, tc.method, tc.path)
		if w.Code != tc.code {
			t.Errorf("%s %s: got %d, want %d", tc.method, tc.path, w.Code, tc.code)
		}
		if tc.code == http.StatusMethodNotAllowed && w.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q, want GET, HEAD", tc.method, tc.path, w.Header().Get("Allow"))
		}
	}
}

func TestServeHTTPListError(t *testing.T) {
	s := &Server{Log: zerolog.Nop(), Services: &fakeServices{err: errors.New("boom")}}
	if w := serve(t, s, http.MethodGet, "/metrics"); w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "boom") {
		t.Errorf("got %d %q, want 503 naming the error", w.Code, w.Body)
	}
}

// A scrape whose services do not answer ends with its request, and only
// one listing runs at a time however many scrapes wait.
func TestScrapeIsBoundedAndSingle(t *testing.T) {
	f := &fakeServices{release: make(chan struct{})}
	s := &Server{Log: zerolog.Nop(), Services: f}
	var wg sync.WaitGroup
	codes := make(chan int, 5)
	for range 5 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			w := httptest.NewRecorder()
			s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil).WithContext(ctx))
			codes <- w.Code
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusServiceUnavailable {
			t.Errorf("got %d, want 503", c)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("got %d listings, want 1 (the others wait for it)", n)
	}
	close(f.release)
	// Once the listing given up on is done, a scrape gets its turn.
	if w := serve(t, s, http.MethodGet, "/metrics"); w.Code != http.StatusOK {
		t.Errorf("after the release: got %d, want 200", w.Code)
	}
	if m := f.most.Load(); m != 1 {
		t.Errorf("got %d listings at once, want 1", m)
	}
}

func TestCheckAddr(t *testing.T) {
	for _, tc := range []struct{ addr, err string }{
		{"127.0.0.1:9100", ""},
		{"0.0.0.0:9100", ""},
		{"[::1]:9100", ""},
		{"[::]:9100", ""},
		{"localhost:9100", ""},
		{":9100", "give an address, e.g. 127.0.0.1:9100"},
		{":", "give an address, e.g. 127.0.0.1:9100"},
		{"", "want ADDR:PORT"},
		{"127.0.0.1", "want ADDR:PORT"},
		{"127.0.0.1:0", "not a port"},
		{"127.0.0.1:65536", "not a port"},
		{"127.0.0.1:http", "not a port"},
	} {
		err := CheckAddr(tc.addr)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("CheckAddr(%q): got %v, want %q", tc.addr, err, tc.err)
		}
	}
}

// Serve answers over a real connection and returns once its context is
// done, closing the listener.
func TestServeStops(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Log: zerolog.Nop(), Services: &fakeServices{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Serve(ctx, ln)
		close(done)
	}()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "metad_services 0") {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("the listener still accepts after Serve returned")
	}
}

// Run logs a listen failure and returns at once.
func TestRunCannotListen(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var logged strings.Builder
	s := &Server{Addr: busy.Addr().String(), Log: zerolog.New(&logged), Services: &fakeServices{}}
	s.Run(context.Background()) // returns: nothing listens
	if !strings.Contains(logged.String(), `"level":"error"`) || !strings.Contains(logged.String(), "cannot listen on") {
		t.Errorf("got log %q, want an error naming the address", logged.String())
	}
}
