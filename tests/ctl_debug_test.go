package tests

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// This file tests metac's command line as users meet it (help, version,
// options after the command, suggestions, errors as JSON), how metad logs
// control requests, and metac debug stacks.

func TestCtlDebugStacks(t *testing.T) {
	port := freePort(t)
	conf := "web daemon /bin/sleep 1000\n" +
		fmt.Sprintf("echo stream port=%d addr=127.0.0.1 /bin/cat\n", port)
	m := startMetad(t, runOpts{conf: conf})
	m.waitEvent(1, "web to start", msg("started", "web"))
	m.waitEvent(1, "the control socket", msg("control socket listening"))
	c := ctlOf(m)

	out, errOut, status := c.run("debug", "stacks")
	if status != 0 || errOut != "" || !strings.HasPrefix(out, "goroutine ") {
		t.Fatalf("metac debug stacks: got status %d, stderr %q, stdout %.300q; want 0 and goroutine stacks", status, errOut, out)
	}
	// The stacks of the server that answered, and of the services.
	for _, want := range []string{"metad/netctl.ServeLocal(", "metad/supervise."} {
		if !strings.Contains(out, want) {
			t.Errorf("metac debug stacks: no %q in\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\ngoroutine "); n < 3 {
		t.Errorf("metac debug stacks: got %d goroutines after the first, want every goroutine of metad", n)
	}
	ev := m.waitEvent(1, "debug stacks to be logged", func(ev event) bool { return ev.str("message") == "control request" && ev.str("cmd") == "debug" })
	if ev.str("level") != "info" {
		t.Errorf("got %v, want debug stacks logged at info", ev)
	}

	// metad goes on serving.
	if h := c.listJSON("web"); len(h.Services) != 1 || len(h.Services[0].Instances) != 1 {
		t.Errorf("after debug stacks: got %+v, want web running", h)
	}

	// As JSON: the stacks in one object.
	out, _, status = c.run("debug", "stacks", "--json")
	var j struct {
		Host   string `json:"host"`
		OK     bool   `json:"ok"`
		Stacks string `json:"stacks"`
	}
	if err := json.Unmarshal([]byte(out), &j); status != 0 || err != nil || strings.Count(out, "\n") != 1 || !j.OK || j.Host != "local" || !strings.Contains(j.Stacks, "metad/netctl.ServeLocal(") {
		t.Errorf("metac debug stacks --json: got status %d, %.300q (%v); want one ok object with the stacks", status, out, err)
	}

	// Never over the network: metac refuses before sending (metad would
	// refuse too).
	_, errOut, status = runBin(t, metacBin, "-h", "127.0.0.1", "debug", "stacks")
	if status != 2 || !strings.Contains(errOut, "local socket only") {
		t.Errorf("metac -h 127.0.0.1 debug stacks: got status %d, stderr %q; want 2 and local socket only", status, errOut)
	}
	_, errOut, status = c.run("debug", "heap")
	if status != 2 || !strings.Contains(errOut, `unknown debug topic "heap"`) {
		t.Errorf("metac debug heap: got status %d, stderr %q; want 2 and the topic refused", status, errOut)
	}
}

func TestCtlCommandLine(t *testing.T) {
	// Help, without a metad: bare metac writes it to stderr and fails
	// (status 2, as a usage error); --help and help to stdout.
	out, errOut, status := runBin(t, metacBin)
	if status != 2 || out != "" || !strings.HasPrefix(errOut, "usage: metac ") || !strings.Contains(errOut, "debug stacks") {
		t.Errorf("metac: got status %d, stdout %q, stderr %.200q; want 2 and the help on stderr", status, out, errOut)
	}
	for _, args := range [][]string{{"--help"}, {"help"}, {"list", "--help"}} {
		out, errOut, status := runBin(t, metacBin, args...)
		if status != 0 || errOut != "" || !strings.HasPrefix(out, "usage: metac ") || !strings.Contains(out, "Options may come before or after the command") {
			t.Errorf("metac %v: got status %d, stdout %.200q, stderr %q; want 0 and the help on stdout", args, status, out, errOut)
		}
	}
	if out, _, status := runBin(t, metadBin, "ctl", "--help"); status != 0 || !strings.HasPrefix(out, "usage: metad ctl ") {
		t.Errorf("metad ctl --help: got status %d, stdout %.100q; want 0 and the help naming metad ctl", status, out)
	}
	for _, args := range [][]string{{"--version"}, {"-V"}, {"list", "--version"}} {
		if out, errOut, status := runBin(t, metacBin, args...); status != 0 || out != "metac test-build\n" {
			t.Errorf("metac %v: got status %d, stdout %q, stderr %q; want 0 and metac test-build", args, status, out, errOut)
		}
	}

	// A mistyped command: the one meant.
	_, errOut, status = runBin(t, metacBin, "lsit")
	if status != 2 || errOut != "metac: unknown command \"lsit\" (did you mean \"list\"?) (see metac --help)\n" {
		t.Errorf("metac lsit: got status %d, stderr %q; want 2 and did you mean list", status, errOut)
	}

	// Errors as JSON with --json: a usage error (no host), an
	// unreachable socket (the local host).
	out, errOut, status = runBin(t, metacBin, "--json", "lsit")
	if h := parseHosts(t, out); status != 2 || len(h) != 1 || h[0].Host != "" || h[0].OK || !strings.Contains(*h[0].Error, `did you mean "list"`) || errOut == "" {
		t.Errorf("metac --json lsit: got status %d, stdout %q, stderr %q; want 2, one JSON error with host \"\", and the message on stderr", status, out, errOut)
	}
	absent := filepath.Join(t.TempDir(), "absent.sock")
	out, _, status = runBin(t, metacBin, "list", "--json", "-s", absent)
	if h := parseHosts(t, out); status != 2 || len(h) != 1 || h[0].Host != "local" || h[0].OK || !strings.HasPrefix(*h[0].Error, "cannot reach metad at "+absent) {
		t.Errorf("metac list --json -s ABSENT: got status %d, stdout %q; want 2 and one JSON error for host local", status, out)
	}

	// With a metad: options after the command, and before it.
	m := startMetad(t, runOpts{conf: "web daemon /bin/sleep 1000\nidle daemon disabled /bin/sleep 1000\n"})
	m.waitEvent(1, "web to start", msg("started", "web"))
	m.waitEvent(1, "the control socket", msg("control socket listening"))
	sock := filepath.Join(m.dir, "metad.sock")
	out, errOut, status = runBin(t, metacBin, "list", "web", "--json", "-s", sock)
	if h := parseHosts(t, out); status != 0 || len(h) != 1 || !h[0].OK || len(h[0].Services) != 1 || h[0].Services[0].Name != "web" {
		t.Errorf("metac list web --json -s SOCK: got status %d, stdout %q, stderr %q; want web as JSON", status, out, errOut)
	}
	if out, errOut, status := runBin(t, metacBin, "-t", "2s", "-s", sock, "list"); status != 0 || !strings.HasPrefix(out, "NAME ") {
		t.Errorf("metac -t 2s -s SOCK list: got status %d, stdout %q, stderr %q; want the table", status, out, errOut)
	}

	// Logs: read-only requests at debug, the others at info, a failed
	// one at warn with its error.
	c := ctlOf(m)
	c.must("version")
	c.must("start", "idle")
	if _, _, status := c.run("stop", "nope"); status != 1 {
		t.Errorf("metac stop nope: got status %d, want 1", status)
	}
	failed := m.waitEvent(1, "the failed stop to be logged", msg("control request failed"))
	if failed.str("level") != "warn" || failed.str("cmd") != "stop" || !strings.Contains(failed.str("error"), `unknown service "nope"`) {
		t.Errorf("got %v, want a warning naming the command and the unknown service", failed)
	}
	want := map[string]string{"list": "debug", "version": "debug", "start": "info", "stop": "info"}
	for _, ev := range m.matching(msg("control request")) {
		if level, ok := want[ev.str("cmd")]; ok && ev.str("level") != level {
			t.Errorf("got %v, want %s logged at %s", ev, ev.str("cmd"), level)
		}
	}
}
