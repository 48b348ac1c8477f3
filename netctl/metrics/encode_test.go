package metrics

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"metad/conffmt"
	"metad/supervise"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// snapshot is a fixed snapshot with every class, every figure and names
// that need escaping, given out of order.
func snapshot() *Snapshot {
	at := time.Unix(1764590400, 250e6)
	return &Snapshot{
		Version:   "1.2.3",
		GoVersion: "go1.26.8",
		Process:   Process{Goroutines: 12, StartTime: at.Add(-time.Hour), CPUSeconds: 1.25, RSSBytes: 8 << 20, OpenFDs: 9, MaxFDs: 1024},
		Services: []supervise.Status{
			{Name: "web", Class: conffmt.Daemon, Enabled: true, State: "ready", Instances: []supervise.Instance{{PID: 10}, {PID: 11}}, Restarts: 4, Starts: 6, Exits: 4, LastExit: &supervise.LastExit{Code: 1},
				Ready: true, Health: "healthy", Unhealthy: 1},
			{Name: "echo", Class: conffmt.Stream, Enabled: true, State: "ready", Port: 7, Held: 2, Restarts: 7, Crashes: 2,
				Ready: true, Refused: supervise.Refused{PerSource: 3, Rate: 5, OnlyFrom: 8}},
			{Name: "cron", Class: conffmt.Daemon, Enabled: true, State: "backoff", Crashes: 3, Restarts: 3, Starts: 5, Exits: 5, LastExit: &supervise.LastExit{Code: 137, Status: "signal 9 (killed)", Outcome: "crashed"}, NextStart: at, NextReason: "min", Custody: []int{20, 21, 22},
				Health: "unhealthy", HealthError: "HTTP 500", CheckFails: 3, Unhealthy: 4},
			{Name: "idle", Class: conffmt.Listener, Enabled: false, State: "disabled"},
		},
	}
}

func TestWriteGolden(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, snapshot()); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "snapshot.prom")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("got:\n%s\nwant (%s, go test -update rewrites it):\n%s", got, golden, want)
	}
}

func TestWriteIsStable(t *testing.T) {
	var a, b bytes.Buffer
	s := snapshot()
	Write(&a, s)
	rev := snapshot()
	for i, j := 0, len(rev.Services)-1; i < j; i, j = i+1, j-1 {
		rev.Services[i], rev.Services[j] = rev.Services[j], rev.Services[i]
	}
	Write(&b, rev)
	if a.String() != b.String() {
		t.Errorf("the order of the services changes the output:\n%s\n----\n%s", a.String(), b.String())
	}
	if s.Services[0].Name != "web" {
		t.Errorf("Write reordered the caller's services: first is %q", s.Services[0].Name)
	}
}

func TestWriteEscapesLabelValues(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"plain", `service="plain"`},
		{`back\slash`, `service="back\\slash"`},
		{`say "hi"`, `service="say \"hi\""`},
		{"two\nlines", `service="two\nlines"`},
		{`\"` + "\n", `service="\\\"\n"`},
		{"ünï", `service="ünï"`},
	} {
		var b bytes.Buffer
		Write(&b, &Snapshot{Services: []supervise.Status{{Name: tc.name, Class: conffmt.Daemon, State: "idle"}}})
		line := "metad_service_enabled{" + tc.want + "} 0\n"
		if !strings.Contains(b.String(), line) {
			t.Errorf("name %q: no line %q in:\n%s", tc.name, line, b.String())
		}
	}
}

func TestWriteLeavesOutUnknownFigures(t *testing.T) {
	var b bytes.Buffer
	Write(&b, &Snapshot{Version: "v", Process: Process{Goroutines: 3, CPUSeconds: -1, RSSBytes: -1, OpenFDs: -1, MaxFDs: -1}})
	got := b.String()
	for _, gone := range []string{"process_", "metad_service_"} {
		if strings.Contains(got, gone) {
			t.Errorf("got %q in:\n%s", gone, got)
		}
	}
	for _, want := range []string{"go_goroutines 3\n", "metad_services 0\n", `metad_build_info{version="v",goversion=""} 1` + "\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in:\n%s", want, got)
		}
	}
}

func TestWriteShowsAStateOutsideTheList(t *testing.T) {
	var b bytes.Buffer
	Write(&b, &Snapshot{Services: []supervise.Status{{Name: "x", Class: conffmt.Daemon, State: "wedged"}}})
	got := b.String()
	if !strings.Contains(got, `metad_service_state{service="x",state="wedged"} 1`) {
		t.Errorf("no series for the state outside the list:\n%s", got)
	}
	for _, st := range States {
		if !strings.Contains(got, `metad_service_state{service="x",state="`+st+`"} 0`) {
			t.Errorf("no 0 for state %s:\n%s", st, got)
		}
	}
}

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {1, "1"}, {-2, "-2"}, {1.25, "1.25"}, {1764590400.25, "1764590400.25"},
		{1 << 40, "1099511627776"}, {inf(1), "+Inf"}, {inf(-1), "-Inf"}, {nan(), "NaN"},
	} {
		if got := formatValue(tc.v); got != tc.want {
			t.Errorf("formatValue(%v): got %q, want %q", tc.v, got, tc.want)
		}
	}
}

func inf(sign int) float64 { return float64(sign) * 1e308 * 10 }

func nan() float64 { z := 0.0; return z / z }

func TestHelpEscapes(t *testing.T) {
	if got, want := helpEscaper.Replace("a\\b\nc \"d\""), `a\\b\nc "d"`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestWriteHealth: metad_service_healthy is there only for a service whose
// check has run; refusals only for streams, one series per rule.
func TestWriteHealth(t *testing.T) {
	var b bytes.Buffer
	Write(&b, &Snapshot{Services: []supervise.Status{
		{Name: "none", Class: conffmt.Daemon},
		{Name: "unknown", Class: conffmt.Daemon, Health: "unknown"},
		{Name: "sick", Class: conffmt.Daemon, Health: "unhealthy", Unhealthy: 2},
		{Name: "tcp", Class: conffmt.Stream, Refused: supervise.Refused{OnlyFrom: 1}},
	}})
	got := b.String()
	for _, want := range []string{
		`metad_service_healthy{service="sick"} 0`, `metad_service_unhealthy_total{service="sick"} 2`,
		`metad_service_unhealthy_total{service="none"} 0`, `metad_service_ready{service="none"} 0`,
		`metad_service_refused_total{service="tcp",rule="only_from"} 1`, `metad_service_refused_total{service="tcp",rule="rate"} 0`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("no %q in:\n%s", want, got)
		}
	}
	for _, gone := range []string{`metad_service_healthy{service="none"}`, `metad_service_healthy{service="unknown"}`, `metad_service_refused_total{service="sick"`} {
		if strings.Contains(got, gone) {
			t.Errorf("got %q in:\n%s", gone, got)
		}
	}
}
