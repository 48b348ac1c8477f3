package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// metricsConf has a healthy daemon, one that crashes at once (its
// restarts go up) and one to disable.
const metricsConf = "ok daemon /bin/sleep 1000\n" +
	"crashy daemon backoff=2s /bin/sh -c 'exit 1'\n" +
	"later daemon /bin/sleep 1000\n"

// startWithMetrics starts metad with metricsConf and --metrics on a free
// loopback port, and returns it with the URL of its metrics.
func startWithMetrics(t *testing.T) (*instance, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m := startMetad(t, runOpts{conf: metricsConf, args: []string{"--metrics", addr}})
	m.waitEvent(1, "metrics to listen", msg("metrics listening"))
	m.waitEvent(1, "metad to start", msg("metad started"))
	return m, "http://" + addr + "/metrics"
}

// scrapeMetrics fetches the metrics and checks them with promtool.
func scrapeMetrics(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("cannot scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: got %s: %s", u, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("content type: got %q, want the text format 0.0.4", ct)
	}
	promtool := "promtool"
	if _, err := exec.LookPath(promtool); err != nil {
		t.Fatalf("promtool is missing (Debian's prometheus package has it; CI installs it): %v", err)
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = bytes.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v: %s\non:\n%s", err, out, body)
	}
	return string(body)
}

// seriesValue returns the value of one series, as written in the exposition
// (`name{label="v",...}`), and whether it is there.
func seriesValue(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

func mustValue(t *testing.T, body, series string) float64 {
	t.Helper()
	v, ok := seriesValue(body, series)
	if !ok {
		t.Fatalf("no series %s in:\n%s", series, body)
	}
	return v
}

func TestMetricsFollowServices(t *testing.T) {
	m, u := startWithMetrics(t)
	m.waitEvent(2, "the crashing service to end twice", msg("exited", "crashy"))
	body := scrapeMetrics(t, u)
	for series, want := range map[string]float64{
		`metad_services`: 3,
		`metad_build_info{version="test-build",goversion="` + buildGoVersion(t, body) + `"}`: 1,
		`metad_service_info{service="ok",class="daemon"}`:                                    1,
		`metad_service_state{service="ok",state="ready"}`:                                    1,
		`metad_service_state{service="ok",state="disabled"}`:                                 0,
		`metad_service_enabled{service="ok"}`:                                                1,
		`metad_service_instances{service="ok"}`:                                              1,
		`metad_service_restarts_total{service="ok"}`:                                         0,
		`metad_service_custody_processes{service="ok"}`:                                      0,
		`metad_service_held_slots{service="ok"}`:                                             0,
		`metad_service_ready{service="ok"}`:                                                  1,
		`metad_service_ready{service="crashy"}`:                                              0,
		`metad_service_unhealthy_total{service="ok"}`:                                        0,
	} {
		if got := mustValue(t, body, series); got != want {
			t.Errorf("%s: got %v, want %v", series, got, want)
		}
	}
	if _, ok := seriesValue(body, `metad_service_healthy{service="ok"}`); ok {
		t.Errorf("metad_service_healthy for a service without a check, want none:\n%s", body)
	}
	first := mustValue(t, body, `metad_service_restarts_total{service="crashy"}`)
	if first < 2 {
		t.Errorf("crashy's restarts after two crashes: got %v, want at least 2", first)
	}
	if got := mustValue(t, body, `metad_service_crashes{service="crashy"}`); got < 1 {
		t.Errorf("crashy's crashes in a row: got %v, want at least 1", got)
	}
	starts, exits := mustValue(t, body, `metad_service_starts_total{service="crashy"}`), mustValue(t, body, `metad_service_exits_total{service="crashy"}`)
	if exits < 2 || starts < exits {
		t.Errorf("crashy's starts and exits: got %v and %v, want at least 2 exits and as many starts", starts, exits)
	}
	if got := mustValue(t, body, `metad_service_last_exit_status{service="crashy"}`); got == 0 {
		t.Errorf("crashy's last exit status: got 0, want its failure")
	}
	for _, series := range []string{"process_start_time_seconds", "process_resident_memory_bytes", "process_open_fds", "process_max_fds", "go_goroutines"} {
		if got := mustValue(t, body, series); got <= 0 {
			t.Errorf("%s: got %v, want more than 0", series, got)
		}
	}

	// One more crash: the counter goes up.
	n := m.count(msg("exited", "crashy"))
	m.waitEvent(n+1, "one more crash", msg("exited", "crashy"))
	if got := mustValue(t, scrapeMetrics(t, u), `metad_service_restarts_total{service="crashy"}`); got <= first {
		t.Errorf("crashy's restarts after one more crash: got %v, want more than %v", got, first)
	}

	// Disabled: the state and the gauge say so, the instance runs on.
	ctlOf(m).must("disable", "later")
	body = scrapeMetrics(t, u)
	for series, want := range map[string]float64{
		`metad_service_enabled{service="later"}`:                 0,
		`metad_service_state{service="later",state="disabled"}`:  1,
		`metad_service_state{service="later",state="ready"}`:     0,
		`metad_service_instances{service="later"}`:               1,
		`metad_service_state{service="ok",state="ready"}`:        1,
		`metad_service_state{service="crashy",state="disabled"}`: 0,
	} {
		if got := mustValue(t, body, series); got != want {
			t.Errorf("after disable later: %s: got %v, want %v", series, got, want)
		}
	}

	// Shutdown closes the metrics port with the rest.
	m.signal(syscall.SIGTERM)
	if status := m.wait(waitLimit); status != 0 {
		t.Errorf("metad exited %d, want 0", status)
	}
	if resp, err := http.Get(u); err == nil {
		resp.Body.Close()
		t.Errorf("metrics still served after metad exited")
	}
}

// buildGoVersion returns the goversion label the body carries.
func buildGoVersion(t *testing.T, body string) string {
	t.Helper()
	_, rest, ok := strings.Cut(body, `metad_build_info{version="test-build",goversion="`)
	v, _, ok2 := strings.Cut(rest, `"`)
	if !ok || !ok2 || !strings.HasPrefix(v, "go") {
		t.Fatalf("no build info with version test-build in:\n%s", body)
	}
	return v
}

func TestMetricsNeedsAnAddress(t *testing.T) {
	for _, tc := range []struct{ arg, want string }{
		{":9100", `metad: invalid --metrics ":9100": give an address, e.g. 127.0.0.1:9100`},
		{"9100", `metad: invalid --metrics "9100": want ADDR:PORT`},
		{"127.0.0.1:99999", `metad: invalid --metrics "127.0.0.1:99999": "99999" is not a port`},
	} {
		_, errOut, status := runBin(t, metadBin, "-n", "-f", "/dev/null", "--metrics", tc.arg)
		if status != 2 || !strings.HasPrefix(errOut, tc.want) {
			t.Errorf("--metrics %s: got status %d, stderr %q; want 2 and %q", tc.arg, status, errOut, tc.want)
		}
	}
	if out, _, _ := runBin(t, metadBin, "-h"); !strings.Contains(out, "--metrics ADDR:PORT") {
		t.Errorf("metad -h does not list --metrics ADDR:PORT:\n%s", out)
	}
}

// A port metrics cannot have is said at error level; metad and its
// services carry on (Prometheus shows the target down).
func TestMetricsPortTaken(t *testing.T) {
	_, u := startWithMetrics(t)
	addr := strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/metrics")
	m := startMetad(t, runOpts{conf: "ok daemon /bin/sleep 1000\n", args: []string{"--metrics", addr}})
	ev := m.waitEvent(1, "the listen failure", msg("metrics are off"))
	if ev.str("level") != "error" || !strings.Contains(ev.str("error"), addr) {
		t.Errorf("got %v, want an error naming %s", ev, addr)
	}
	m.waitEvent(1, "the service to start all the same", msg("started", "ok"))
}

// TestMetricsPrometheusScrapes has a real Prometheus scrape metad.
func TestMetricsPrometheusScrapes(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is missing (Debian's prometheus package has it; CI installs it): %v", err)
	}
	_, u := startWithMetrics(t)
	target := strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/metrics")
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	text := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: metad\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	web := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var log bytes.Buffer
	cmd := exec.Command(prom, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(waitLimit):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log.String())
		}
	})

	// Prometheus says nothing when a scrape lands: its query API is asked
	// until the series is there. The interval is the scrape interval's
	// fraction; the deadline allows for its start on a loaded machine.
	query := "http://" + web + "/api/v1/query?query=" + url.QueryEscape(`metad_service_restarts_total{job="metad",service="crashy"}`)
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("prometheus exited: %v", err)
		case <-tick.C:
		}
		if v, ok := promQuery(query); ok {
			if v < 0 {
				t.Errorf("got restarts %v", v)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus has no metad_service_restarts_total after 60s")
		}
	}
}

// promQuery runs an instant query and returns the first sample's value,
// false while there is none.
func promQuery(u string) (float64, bool) {
	resp, err := http.Get(u)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" || len(r.Data.Result) == 0 {
		return 0, false
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

// After a re-exec the new image serves metrics on the same port: the
// old image's socket did not outlive the exec, the counters carried over,
// and the process is the same.
func TestMetricsAfterReexec(t *testing.T) {
	m, u := startWithMetrics(t)
	m.waitEvent(2, "the crashing service to end twice", msg("exited", "crashy"))
	before := scrapeMetrics(t, u)
	restarts := mustValue(t, before, `metad_service_restarts_total{service="crashy"}`)
	if out, errOut, status := m.metac("reexec"); status != 0 {
		t.Fatalf("metac reexec: status %d, %q %q", status, out, errOut)
	}
	m.waitEvent(1, "the new image", msg("took over from the previous metad"))
	m.waitEvent(2, "metrics in the new image", msg("metrics listening"))
	after := scrapeMetrics(t, u)
	if got := mustValue(t, after, `metad_service_restarts_total{service="crashy"}`); got < restarts {
		t.Errorf("crashy's restarts after the re-exec: got %v, want at least %v", got, restarts)
	}
	if got := mustValue(t, after, `metad_service_instances{service="ok"}`); got != 1 {
		t.Errorf("ok's instances after the re-exec: got %v, want 1", got)
	}
	start := "process_start_time_seconds"
	if a, b := mustValue(t, before, start), mustValue(t, after, start); a != b {
		t.Errorf("%s: got %v after the re-exec, %v before; want the same process", start, b, a)
	}
	if n := m.count(msg("metrics are off")); n != 0 {
		t.Errorf("the new image could not listen: %v", m.matching(msg("metrics are off")))
	}
}
