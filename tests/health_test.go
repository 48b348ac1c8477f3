package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// healthServer is a Python HTTP server that answers 500 while the file
// FAIL exists next to it, 200 otherwise, and prints a line per request.
const healthServer = `
import http.server, os, sys
port, flag = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if os.path.exists(flag) else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok\n" if code == 200 else b"broken\n")
        print("request", code, flush=True)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
`

// TestHealthHTTPCheck: a real HTTP server under check=http://: healthy,
// it is never restarted while many checks pass; answering 500, or hung
// (SIGSTOP), it is stopped after check_fails failed checks, counted as a
// crash, and started again.
func TestHealthHTTPCheck(t *testing.T) {
	python := lookPath(t, "python3")
	dir := t.TempDir()
	srv, flag := filepath.Join(dir, "server.py"), filepath.Join(dir, "FAIL")
	if err := os.WriteFile(srv, []byte(healthServer), 0o644); err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(freePort(t))
	m := startMetad(t, runOpts{conf: shq("web", "daemon", "watch_output", "ready=tcp:"+port,
		"check=http://127.0.0.1:"+port+"/health", "check_every=200ms", "check_timeout=500ms", "check_fails=3",
		"stop_timeout=1s", "backoff=1s", python, srv, port, flag) + "\n"})
	first := m.waitEvent(1, "web ready", msg("ready", "web"))
	requests := func(code, pid int) func(event) bool {
		return func(e event) bool {
			return e.str("svc") == "web" && e.int("pid") == pid && e.str("message") == "request "+strconv.Itoa(code)
		}
	}
	// Healthy: 25 checks in a row pass (5 s), and nothing is stopped or
	// started again.
	m.waitEvent(25, "25 healthy checks", requests(200, first.int("pid")))
	if n := m.count(msg("started", "web")); n != 1 {
		t.Fatalf("healthy server: got %d starts, want 1", n)
	}
	if n := m.count(msg("unhealthy: stopping it", "web")); n != 0 {
		t.Fatalf("healthy server: got %d unhealthy, want none", n)
	}

	// 500: stopped after three failed checks, and started again.
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e := m.waitEvent(1, "unhealthy on 500", msg("unhealthy: stopping it", "web"))
	if !strings.Contains(e.str("reason"), "3 checks failed") || !strings.Contains(e.str("reason"), "500") {
		t.Errorf("unhealthy: got reason %q, want 3 failed checks and the 500", e.str("reason"))
	}
	if got := m.count(requests(500, first.int("pid"))); got < 3 {
		t.Errorf("unhealthy after %d answers 500, want at least 3", got)
	}
	ex := m.waitEvent(1, "the unhealthy instance ended", func(e event) bool {
		return e.str("message") == "exited" && e.int("pid") == first.int("pid")
	})
	if ex.str("outcome") != "crashed" {
		t.Errorf("unhealthy instance: got outcome %q, want crashed", ex.str("outcome"))
	}
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	second := m.waitEvent(2, "web ready again", msg("ready", "web"))

	// Hung: SIGSTOP; the checks time out, and SIGKILL follows the stop
	// signal it cannot take.
	m.waitEvent(1, "a healthy check of the new instance", requests(200, second.int("pid")))
	if err := syscall.Kill(second.int("pid"), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	e = m.waitEvent(2, "unhealthy when hung", msg("unhealthy: stopping it", "web"))
	if !strings.Contains(e.str("reason"), "no answer") && !strings.Contains(e.str("reason"), "deadline") {
		t.Errorf("hung: got reason %q, want a check without an answer", e.str("reason"))
	}
	m.waitEvent(1, "the hung instance killed", func(e event) bool {
		return e.str("message") == "killed" && e.int("pid") == second.int("pid")
	})
	m.waitEvent(3, "web ready a third time", msg("ready", "web"))

	out, _, _ := ctlOf(m).run("--json", "status", "web")
	if !strings.Contains(out, `"unhealthy":2`) {
		t.Errorf("metac --json status: got %s, want unhealthy 2", out)
	}
}

// TestWatchdog: systemd-notify WATCHDOG=1 in a loop that stops: the
// instance is killed with SIGABRT once a watchdog period passes without
// one, counted as a crash, and started again. It got WATCHDOG_USEC.
func TestWatchdog(t *testing.T) {
	notify := lookPath(t, "systemd-notify")
	script := notify + " --ready; for i in 1 2 3 4 5 6; do " + notify + " WATCHDOG=1; sleep 0.2; done; exec sleep 1000"
	m := startMetad(t, runOpts{conf: shq("wd", "daemon", "ready=notify", "watchdog=1s", "stop_timeout=2s", "backoff=1s", "sh", "-c", script) + "\n"})
	first := m.waitEvent(1, "ready", msg("ready", "wd"))
	env, err := os.ReadFile("/proc/" + strconv.Itoa(first.int("pid")) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(env), "WATCHDOG_USEC=1000000\x00") || !strings.Contains(string(env), "NOTIFY_SOCKET=@") {
		t.Errorf("environment: got %q, want WATCHDOG_USEC=1000000 and NOTIFY_SOCKET", env)
	}
	e := m.waitEvent(1, "watchdog expired", msg("unhealthy: stopping it", "wd"))
	if !strings.Contains(e.str("reason"), "watchdog") || e.str("signal") != "aborted" {
		t.Errorf("watchdog: got reason %q, signal %q, want the watchdog and SIGABRT", e.str("reason"), e.str("signal"))
	}
	// The loop ran past one period: the expiry came after the pings.
	if ran := e.int("pid"); ran != first.int("pid") {
		t.Errorf("watchdog: pid %d stopped, want %d", ran, first.int("pid"))
	}
	ex := m.waitEvent(1, "the instance ended", func(e event) bool {
		return e.str("message") == "exited" && e.int("pid") == first.int("pid")
	})
	if ex.str("status") != "signal 6 (aborted)" || ex.str("outcome") != "crashed" {
		t.Errorf("exit: got %q %q, want signal 6 and crashed", ex.str("status"), ex.str("outcome"))
	}
	m.waitEvent(2, "started again", msg("started", "wd"))
}

// TestQuiet: quiet=2s on a program that stops printing: it is stopped as
// hung and started again; one that keeps printing is left alone.
func TestQuiet(t *testing.T) {
	conf := shq("mute", "daemon", "watch_output", "quiet=2s", "stop_timeout=1s", "backoff=1s", "sh", "-c", "echo one; sleep 0.5; echo two; exec sleep 1000") + "\n" +
		shq("chatty", "daemon", "watch_output", "quiet=2s", "sh", "-c", "while :; do echo tick; sleep 0.2; done") + "\n"
	m := startMetad(t, runOpts{conf: conf})
	first := m.waitEvent(1, "mute started", msg("started", "mute"))
	e := m.waitEvent(1, "mute hung", msg("unhealthy: stopping it", "mute"))
	if !strings.Contains(e.str("reason"), "no output line in 2s") {
		t.Errorf("quiet: got reason %q", e.str("reason"))
	}
	if e.int("pid") != first.int("pid") {
		t.Errorf("quiet: stopped pid %d, want %d", e.int("pid"), first.int("pid"))
	}
	m.waitEvent(2, "mute started again", msg("started", "mute"))
	if n := m.count(func(e event) bool { return e.str("svc") == "chatty" && e.str("message") == "unhealthy: stopping it" }); n != 0 {
		t.Errorf("chatty: stopped %d times, want never", n)
	}
	if n := m.count(msg("started", "chatty")); n != 1 {
		t.Errorf("chatty: started %d times, want 1", n)
	}
}

func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s: %v (.ci/run installs it)", name, err)
	}
	return p
}
