package netctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"metad/conffmt"
	"metad/supervise"
)

// fakeControl is a Controller and System that records the calls it gets.
// It is safe for concurrent use, as servers need.
type fakeControl struct {
	mu        sync.Mutex
	services  []supervise.Status
	calls     []string
	reloadErr error
}

func newFakeControl(names ...string) *fakeControl {
	f := &fakeControl{}
	for i, n := range names {
		f.services = append(f.services, supervise.Status{
			Name: n, Class: conffmt.Daemon, Enabled: true, State: "running",
			Instances: []supervise.Instance{{PID: 100 + i, Started: testTime}},
		})
	}
	return f
}

func (f *fakeControl) record(call string, names []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, strings.TrimSpace(call+" "+strings.Join(names, " ")))
	for _, n := range names {
		if !slices.ContainsFunc(f.services, func(s supervise.Status) bool { return s.Name == n }) {
			return fmt.Errorf("%w %q", supervise.ErrUnknownService, n)
		}
	}
	return nil
}

func (f *fakeControl) List(names ...string) ([]supervise.Status, error) {
	if err := f.record("list", names); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(names) == 0 {
		return slices.Clone(f.services), nil
	}
	var out []supervise.Status
	for _, s := range f.services {
		if slices.Contains(names, s.Name) {
			out = append(out, s)
		}
	}
	return out, nil
}

func (f *fakeControl) Enable(names ...string) error  { return f.record("enable", names) }
func (f *fakeControl) Disable(names ...string) error { return f.record("disable", names) }
func (f *fakeControl) Start(name string) error       { return f.record("start", []string{name}) }
func (f *fakeControl) Stop(names ...string) error    { return f.record("stop", names) }
func (f *fakeControl) Restart(names ...string) error { return f.record("restart", names) }
func (f *fakeControl) Kill(name string, sig syscall.Signal) error {
	return f.record(fmt.Sprintf("kill %d", sig), []string{name})
}

func (f *fakeControl) Reload() error {
	f.record("reload", nil)
	return f.reloadErr
}

func (f *fakeControl) Shutdown(fin Final) {
	f.record("shutdown "+fin.String(), nil)
}

func (f *fakeControl) CheckReexec() error { return f.record("reexec", nil) }
func (f *fakeControl) Reexec()            { f.record("reexec now", nil) }

func (f *fakeControl) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func newTestHandler(f *fakeControl, machine bool) *Handler {
	return &Handler{Controller: f, System: f, Version: "1.2.3", Hostname: "box", Machine: machine}
}

func TestHandlerCommands(t *testing.T) {
	tests := []struct {
		name    string
		machine bool
		cmd     string
		args    []string
		call    string // recorded by the fake; "" for none
		err     string // in the reply; "" for ok
	}{
		{"list", false, "list", nil, "list", ""},
		{"list some", false, "list", []string{"web"}, "list web", ""},
		{"list unknown", false, "list", []string{"nope"}, "list nope", `unknown service "nope"`},
		{"enable", false, "enable", []string{"web", "db"}, "enable web db", ""},
		{"enable needs a name", false, "enable", nil, "", "usage: enable SERVICE..."},
		{"disable unknown", false, "disable", []string{"web", "nope"}, "disable web nope", `unknown service "nope"`},
		{"start", false, "start", []string{"web"}, "start web", ""},
		{"start takes one", false, "start", []string{"web", "db"}, "", "usage: start SERVICE"},
		{"stop", false, "stop", []string{"db"}, "stop db", ""},
		{"restart", false, "restart", []string{"db"}, "restart db", ""},
		{"kill with TERM by default", false, "kill", []string{"web"}, "kill 15 web", ""},
		{"kill by name", false, "kill", []string{"web", "HUP"}, "kill 1 web", ""},
		{"kill by SIG name", false, "kill", []string{"web", "sigusr1"}, "kill 10 web", ""},
		{"kill by number", false, "kill", []string{"web", "9"}, "kill 9 web", ""},
		{"kill with a bad signal", false, "kill", []string{"web", "NOPE"}, "", `invalid signal "NOPE"`},
		{"kill with signal 0", false, "kill", []string{"web", "0"}, "", `invalid signal "0"`},
		{"reload", false, "reload", nil, "reload", ""},
		{"reload takes nothing", false, "reload", []string{"x"}, "", "reload takes no arguments"},
		{"version", false, "version", nil, "", ""},
		{"shutdown", false, "shutdown", nil, "shutdown shutdown", ""},
		{"shutdown as PID 1", true, "shutdown", nil, "shutdown shutdown", ""},
		{"poweroff refused off PID 1", false, "poweroff", nil, "", "cannot poweroff: metad is not PID 1 of a machine"},
		{"reboot refused off PID 1", false, "reboot", nil, "", "cannot reboot: metad is not PID 1 of a machine"},
		{"poweroff as PID 1", true, "poweroff", nil, "shutdown poweroff", ""},
		{"reboot as PID 1", true, "reboot", nil, "shutdown reboot", ""},
		{"halt as PID 1", true, "halt", nil, "shutdown halt", ""},
		{"reexec: checked, then done after the reply", false, "reexec", nil, "reexec,reexec now", ""},
		{"unknown command", false, "frobnicate", nil, "", `unknown command "frobnicate"`},
	}
	for _, tt := range tests {
		f := newFakeControl("web", "db")
		r, then := newTestHandler(f, tt.machine).Do(NewRequest(tt.cmd, tt.args...), ViaLocal)
		if strings.HasPrefix(tt.call, "shutdown") && (then == nil || len(f.callLog()) != 0) {
			t.Errorf("%s: got calls %q before the reply was sent, want the shutdown left for after it", tt.name, f.callLog())
		}
		if then != nil {
			then()
		}
		var want []string
		if tt.call != "" {
			want = strings.Split(tt.call, ",")
		}
		if got := f.callLog(); !slices.Equal(got, want) {
			t.Errorf("%s: got calls %q, want %q", tt.name, got, want)
		}
		if r.OK != (tt.err == "") || !strings.Contains(r.Error, tt.err) {
			t.Errorf("%s: got ok %v, error %q; want error containing %q", tt.name, r.OK, r.Error, tt.err)
		}
		if r.Version != protocolVersion || r.Name != "box" {
			t.Errorf("%s: got version %d, name %q; want %d, %q", tt.name, r.Version, r.Name, protocolVersion, "box")
		}
	}
}

func TestHandlerReplies(t *testing.T) {
	f := newFakeControl("web")
	next := testTime.Add(time.Minute)
	f.services = append(f.services, supervise.Status{Name: "echo", Class: conffmt.Stream, State: "idle", Port: 7, NextStart: next})
	h := newTestHandler(f, false)

	r, _ := h.Do(NewRequest("list"), ViaLocal)
	if len(r.Services) != 2 {
		t.Fatalf("got %d services, want 2", len(r.Services))
	}
	web, echo := r.Services[0], r.Services[1]
	if web.Name != "web" || web.Class != "daemon" || !web.Enabled || len(web.Instances) != 1 || web.Instances[0].PID != 100 || web.NextStart != nil {
		t.Errorf("got %+v, want web, daemon, enabled, pid 100, no next start", web)
	}
	if echo.Class != "stream" || echo.Port != 7 || echo.Instances == nil || len(echo.Instances) != 0 || echo.NextStart == nil || !echo.NextStart.Equal(next) {
		t.Errorf("got %+v, want a stream on port 7, no instances (not nil), next start %v", echo, next)
	}

	if r, _ := h.Do(NewRequest("version"), ViaLocal); r.Metad != "1.2.3" {
		t.Errorf("got version %q, want %q", r.Metad, "1.2.3")
	}

	f.reloadErr = errors.New("a.conf:1:1: bad\na.conf:2:5: worse")
	if r, _ := h.Do(NewRequest("reload"), ViaLocal); r.OK || r.Error != f.reloadErr.Error() {
		t.Errorf("got ok %v, error %q; want the config errors %q", r.OK, r.Error, f.reloadErr)
	}

	if r, _ := h.Do(Request{Version: 2, Command: "list"}, ViaLocal); r.OK || !strings.Contains(r.Error, "unsupported request version 2") {
		t.Errorf("got ok %v, error %q; want a version error", r.OK, r.Error)
	}
}

// TestServiceOfLifecycle: readiness, timeouts (status only), the last
// stop, health and admission go on the wire in the units and names of
// docs/protocol.md.
func TestServiceOfLifecycle(t *testing.T) {
	st := supervise.Status{Name: "web", Class: conffmt.Daemon, State: "ready", Ready: true, Notify: "serving",
		ReadyTimeout: 90 * time.Second, StopTimeout: 2500 * time.Millisecond,
		LastStop: &supervise.LastStop{At: testTime, Took: 2010 * time.Millisecond, Killed: true},
		Health:   "unhealthy", HealthError: "HTTP 500", CheckFails: 3, Unhealthy: 2}
	if list := serviceOf(st); list.ReadyTimeout != 0 || list.StopTimeout != 0 {
		t.Errorf("list: got timeouts %v and %v, want them left out", list.ReadyTimeout, list.StopTimeout)
	}
	got := detailsOf(st)
	ready := true
	want := Service{Name: "web", Class: "daemon", State: "ready", Instances: []Instance{}, Ready: &ready, NotifyStatus: "serving", ReadyTimeout: 90, StopTimeout: 2.5,
		LastStop: &LastStop{At: testTime, Took: 2.01, Killed: true}, Health: "unhealthy", HealthError: "HTTP 500", CheckFails: 3, Unhealthy: 2}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("got %s, want %s", gb, wb)
	}

	echo := serviceOf(supervise.Status{Name: "echo", Class: conffmt.Stream, Refused: supervise.Refused{PerSource: 1, Rate: 2, OnlyFrom: 3}})
	if echo.Refused == nil || *echo.Refused != (Refused{PerSource: 1, Rate: 2, OnlyFrom: 3}) {
		t.Errorf("echo: got refused %+v, want 1, 2, 3", echo.Refused)
	}
	if d := serviceOf(supervise.Status{Name: "d", Class: conffmt.Daemon}); d.Refused != nil || d.LastStop != nil {
		t.Errorf("daemon: got %+v, want no refused and no last stop", d)
	}
}

// TestReplyCompatible: within version 1 a reply gains fields. A reader
// ignores those it does not know, and a field it knows that an older
// metad leaves out reads as absent.
func TestReplyCompatible(t *testing.T) {
	var r Reply
	newer := `{"v":1,"ok":true,"services":[{"name":"web","class":"daemon","state":"ready","ready":true,"instances":[],` +
		`"restarts":0,"crashes":0,"starts":1,"exits":0,"some_later_field":{"x":1}}]}`
	if err := json.Unmarshal([]byte(newer), &r); err != nil || len(r.Services) != 1 || r.Services[0].Ready == nil || !*r.Services[0].Ready {
		t.Errorf("a newer reply: got %+v, %v; want web, ready", r, err)
	}
	r = Reply{}
	older := `{"v":1,"ok":true,"services":[{"name":"web","class":"daemon","state":"running","instances":[{"pid":5,"started":"2026-03-04T05:06:07Z"}],"restarts":0,"crashes":0}]}`
	if err := json.Unmarshal([]byte(older), &r); err != nil || len(r.Services) != 1 || r.Services[0].Ready != nil || r.Services[0].StopTimeout != 0 {
		t.Errorf("an older reply: got %+v, %v; want web without ready or timeouts", r, err)
	}
	var old struct { // what a version 1 reader of the first days knows
		V        int
		OK       bool
		Services []struct {
			Name, Class, State string
			Enabled            bool
		}
	}
	if err := json.Unmarshal([]byte(newer), &old); err != nil || !old.OK || old.Services[0].State != "ready" {
		t.Errorf("an old reader: got %+v, %v", old, err)
	}
}

func TestDebugStacks(t *testing.T) {
	h := newTestHandler(newFakeControl("web"), false)
	r, then := h.Do(NewRequest("debug", "stacks"), ViaLocal)
	if !r.OK || then != nil || !strings.Contains(r.Stacks, "goroutine ") || !strings.Contains(r.Stacks, "netctl.TestDebugStacks") {
		t.Errorf("locally: got ok %v, error %q, stacks %.200q; want this goroutine's stack among others", r.OK, r.Error, r.Stacks)
	}
	r, _ = h.Do(NewRequest("debug", "stacks"), ViaNetwork)
	if r.OK || r.Stacks != "" || !strings.Contains(r.Error, "cannot debug over the network: served on the local socket only") {
		t.Errorf("over the network: got ok %v, error %q, %d bytes of stacks; want it refused", r.OK, r.Error, len(r.Stacks))
	}
	r, _ = h.Do(NewRequest("debug", "heap"), ViaLocal)
	if r.OK || !strings.Contains(r.Error, `unknown debug topic "heap"`) {
		t.Errorf("debug heap: got ok %v, error %q; want an unknown topic", r.OK, r.Error)
	}
}

func TestStacksBounded(t *testing.T) {
	for _, limit := range []int{64, 300} {
		got := stacks(limit)
		body, cut, found := strings.Cut(got, "\n... cut at ")
		if !found || len(body) != limit || cut != strconv.Itoa(limit)+" bytes\n" {
			t.Errorf("limit %d: got %d bytes ending %q, want %d bytes and a note that they were cut", limit, len(got), got[max(0, len(got)-40):], limit)
		}
	}
	if got := stacks(maxStacks); strings.Contains(got, "... cut at") || !strings.HasPrefix(got, "goroutine ") {
		t.Errorf("got %.100q... (%d bytes), want every stack, whole", got, len(got))
	}
}

func TestAnswerLogs(t *testing.T) {
	tests := []struct {
		name  string
		req   Request
		via   Via
		level string // of the "control request" line
		warn  string // in a warn line after it; "" for none
	}{
		{"list is read-only", NewRequest("list"), ViaLocal, "debug", ""},
		{"version is read-only", NewRequest("version"), ViaNetwork, "debug", ""},
		{"stop changes things", NewRequest("stop", "web"), ViaLocal, "info", ""},
		{"an unknown service is refused", NewRequest("stop", "nope"), ViaLocal, "info", `unknown service \"nope\"`},
		{"a failed list is refused too", NewRequest("list", "nope"), ViaLocal, "debug", `unknown service \"nope\"`},
		{"debug over the network is refused", NewRequest("debug", "stacks"), ViaNetwork, "info", "local socket only"},
		{"an unknown command is refused", NewRequest("frobnicate"), ViaNetwork, "info", "unknown command"},
	}
	for _, tt := range tests {
		var buf strings.Builder
		log := zerolog.New(&buf).Level(zerolog.DebugLevel).With().Str("peer", "p").Logger()
		newTestHandler(newFakeControl("web"), false).answer(log, tt.req, tt.via)
		lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
		want := 1
		if tt.warn != "" {
			want = 2
		}
		if len(lines) != want || !strings.Contains(lines[0], `"level":"`+tt.level+`"`) || !strings.Contains(lines[0], `"message":"control request"`) ||
			!strings.Contains(lines[0], `"peer":"p"`) || !strings.Contains(lines[0], `"cmd":"`+tt.req.Command+`"`) {
			t.Errorf("%s: got log\n%s\nwant a control request line at %s naming the peer and the command", tt.name, buf.String(), tt.level)
			continue
		}
		if tt.warn != "" && (!strings.Contains(lines[1], `"level":"warn"`) || !strings.Contains(lines[1], `"message":"control request failed"`) ||
			!strings.Contains(lines[1], tt.warn) || !strings.Contains(lines[1], `"peer":"p"`)) {
			t.Errorf("%s: got log\n%s\nwant a warning naming the peer and %s", tt.name, buf.String(), tt.warn)
		}
	}
}
