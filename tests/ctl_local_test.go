package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ctlHost is one line of metac --json.
type ctlHost struct {
	Host     string       `json:"host"`
	Name     string       `json:"name"`
	OK       bool         `json:"ok"`
	Error    *string      `json:"error"`
	Version  string       `json:"version"`
	Services []ctlService `json:"services"`
}

type ctlService struct {
	Name      string        `json:"name"`
	Class     string        `json:"class"`
	Enabled   *bool         `json:"enabled"`
	State     string        `json:"state"`
	Port      int           `json:"port"`
	Instances []ctlInstance `json:"instances"`
	Restarts  *int          `json:"restarts"`
	NextStart *string       `json:"next_start"`
}

type ctlInstance struct {
	PID     int    `json:"pid"`
	Started string `json:"started"`
}

// parseHosts parses metac --json output: one object per line.
func parseHosts(t *testing.T, out string) []ctlHost {
	t.Helper()
	var hosts []ctlHost
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		var h ctlHost
		if err := json.Unmarshal([]byte(line), &h); err != nil {
			t.Fatalf("metac --json: bad line %q: %v", line, err)
		}
		if h.Error == nil {
			t.Errorf("metac --json: line %q has no error field", line)
		}
		hosts = append(hosts, h)
	}
	return hosts
}

// service returns the named service of h, failing the test if it is not
// there.
func (h ctlHost) service(t *testing.T, name string) ctlService {
	t.Helper()
	for _, s := range h.Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("host %s: no service %q in %+v", h.Host, name, h.Services)
	return ctlService{}
}

// ctl runs metac against one local socket.
type ctl struct {
	t    *testing.T
	sock string
}

// ctlOf returns the ctl of m's default socket.
func ctlOf(m *instance) ctl { return ctl{m.t, filepath.Join(m.dir, "metad.sock")} }

// run runs metac with args and returns stdout, stderr and the status.
func (c ctl) run(args ...string) (string, string, int) {
	c.t.Helper()
	return runBin(c.t, metacBin, append([]string{"-s", c.sock}, args...)...)
}

// listJSON runs metac --json list and returns the one host's answer.
func (c ctl) listJSON(names ...string) ctlHost {
	c.t.Helper()
	out, errOut, status := c.run(append([]string{"--json", "list"}, names...)...)
	hosts := parseHosts(c.t, out)
	if status != 0 || len(hosts) != 1 || !hosts[0].OK {
		c.t.Fatalf("metac --json list: got status %d, stdout %q, stderr %q; want 0 and one ok host", status, out, errOut)
	}
	return hosts[0]
}

// must runs a metac command that must succeed quietly.
func (c ctl) must(args ...string) {
	c.t.Helper()
	out, errOut, status := c.run(args...)
	if status != 0 || errOut != "" {
		c.t.Fatalf("metac %s: got status %d, stdout %q, stderr %q; want 0 and nothing on stderr", strings.Join(args, " "), status, out, errOut)
	}
}

func exitedPID(pid int) func(event) bool {
	return func(ev event) bool { return ev.str("message") == "exited" && ev.int("pid") == pid }
}

func TestCtlLocalEveryCommand(t *testing.T) {
	port := freePort(t)
	conf := "web daemon /bin/sleep 1000\n" +
		"pair daemon min=2 max=2 /bin/sleep 1000\n" +
		"later daemon disabled /bin/sleep 1000\n" +
		fmt.Sprintf("echo stream port=%d addr=127.0.0.1 /bin/cat\n", port)
	m := startMetad(t, runOpts{conf: conf})
	web := m.waitEvent(1, "web to start", msg("started", "web")).int("pid")
	m.waitEvent(2, "pair to start twice", msg("started", "pair"))
	m.waitEvent(1, "the control socket", msg("control socket listening"))
	c := ctlOf(m)

	// list --json: the schema of SPEC §5.
	h := c.listJSON()
	if h.Host == "" || *h.Error != "" || len(h.Services) != 4 {
		t.Fatalf("got %+v, want an ok host with 4 services", h)
	}
	s := h.service(t, "web")
	if s.Class != "daemon" || s.Enabled == nil || !*s.Enabled || s.State != "ready" || s.Restarts == nil || len(s.Instances) != 1 || s.Instances[0].PID != web {
		t.Errorf("web: got %+v, want an enabled ready daemon with instance %d", s, web)
	}
	if ts, err := time.Parse(time.RFC3339, s.Instances[0].Started); err != nil || time.Since(ts) > time.Hour || time.Since(ts) < 0 {
		t.Errorf("web: got start time %q (%v), want a recent RFC 3339 time", s.Instances[0].Started, err)
	}
	if p := h.service(t, "pair"); len(p.Instances) != 2 {
		t.Errorf("pair: got %d instances, want 2", len(p.Instances))
	}
	if l := h.service(t, "later"); *l.Enabled || l.Instances == nil || len(l.Instances) != 0 {
		t.Errorf("later: got %+v, want disabled with an empty instances array", l)
	}
	if e := h.service(t, "echo"); e.Class != "stream" || e.Port != port {
		t.Errorf("echo: got %+v, want a stream on port %d", e, port)
	}

	// list, human: one header, then aligned columns.
	out, _, status := c.run("list")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if status != 0 || len(lines) != 6 || !strings.HasPrefix(lines[0], "NAME ") {
		t.Fatalf("metac list: got status %d, output\n%s\nwant a header and 5 lines (pair has two)", status, out)
	}
	col := strings.Index(lines[0], "STATE")
	for _, l := range lines[1:] {
		if w := strings.Fields(l); len(w) > 4 && !strings.HasPrefix(l[col:], w[3]) {
			t.Errorf("metac list: line %q does not have its state under STATE:\n%s", l, out)
		}
	}

	// list SERVICE, and errors naming the service.
	if h := c.listJSON("echo"); len(h.Services) != 1 || h.Services[0].Name != "echo" {
		t.Errorf("list echo: got %+v, want only echo", h.Services)
	}
	for _, args := range [][]string{{"list", "nope"}, {"enable", "web", "nope"}, {"stop", "nope"}, {"kill", "nope"}} {
		_, errOut, status := c.run(args...)
		if status != 1 || errOut != "metac: unknown service \"nope\"\n" {
			t.Errorf("metac %v: got status %d, stderr %q; want 1 and the unknown service named", args, status, errOut)
		}
	}
	if h := c.listJSON("web"); !*h.Services[0].Enabled {
		t.Errorf("enable web nope: web got disabled, want nothing done")
	}

	// disable and enable.
	c.must("disable", "web")
	if s := c.listJSON("web").Services[0]; *s.Enabled || s.State != "disabled" || len(s.Instances) != 1 {
		t.Errorf("after disable: got %+v, want disabled with its instance still running", s)
	}
	c.must("enable", "web")
	if s := c.listJSON("web").Services[0]; !*s.Enabled {
		t.Errorf("after enable: got %+v, want enabled", s)
	}

	// kill with a signal name, and the daemon rules start a new one.
	c.must("kill", "web", "usr1")
	ev := m.waitEvent(1, "web to die of SIGUSR1", exitedPID(web))
	if !strings.Contains(ev.str("status"), "signal 10") {
		t.Errorf("got exit status %q, want signal 10", ev.str("status"))
	}
	web2 := m.waitEvent(2, "web to start again", msg("started", "web")).int("pid")

	// restart: the instance is stopped and replaced.
	c.must("restart", "web")
	m.waitEvent(1, "web to stop for the restart", exitedPID(web2))
	m.waitEvent(3, "web to start after the restart", msg("started", "web"))

	// stop: disabled, every instance stopped.
	pair := c.listJSON("pair").Services[0].Instances
	c.must("stop", "pair")
	for _, in := range pair {
		m.waitEvent(1, "pair to stop", exitedPID(in.PID))
	}
	if s := c.listJSON("pair").Services[0]; *s.Enabled || len(s.Instances) != 0 {
		t.Errorf("after stop: got %+v, want disabled and no instances", s)
	}

	// start: one instance of a disabled service.
	c.must("start", "later")
	later := m.waitEvent(1, "later to start", msg("started", "later")).int("pid")
	if s := c.listJSON("later").Services[0]; len(s.Instances) != 1 || s.Instances[0].PID != later {
		t.Errorf("after start: got %+v, want instance %d", s, later)
	}

	// version.
	if out, _, status := c.run("version"); status != 0 || out != "metad test-build\n" {
		t.Errorf("metac version: got status %d, %q; want metad test-build", status, out)
	}
	out, _, _ = c.run("--json", "version")
	if h := parseHosts(t, out); len(h) != 1 || h[0].Version != "test-build" {
		t.Errorf("metac --json version: got %q, want version test-build", out)
	}

	// reload: ok, then the errors of a bad config.
	c.must("reload")
	confPath := filepath.Join(m.dir, "metad.conf")
	if err := os.WriteFile(confPath, []byte(conf+"bad daemon mx=3 /bin/true\nweb daemon /bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, status := c.run("reload")
	errLines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
	if status != 1 || len(errLines) < 2 || !strings.HasPrefix(errLines[0], "metac: "+confPath+":5:") || !strings.HasPrefix(errLines[1], "metac: "+confPath+":6:") {
		t.Errorf("metac reload of a bad config: got status %d, stderr %q; want 1 and an error per line, each FILE:LINE:COL", status, errOut)
	}
	out, _, _ = c.run("--json", "reload")
	if h := parseHosts(t, out); len(h) != 1 || h[0].OK || !strings.Contains(*h[0].Error, confPath+":5:") {
		t.Errorf("metac --json reload: got %q, want ok false and the errors", out)
	}

	// poweroff, reboot, halt: refused when metad is not PID 1 of a machine.
	for _, cmd := range []string{"poweroff", "reboot", "halt"} {
		_, errOut, status := c.run(cmd)
		if status != 1 || !strings.Contains(errOut, "not PID 1 of a machine") {
			t.Errorf("metac %s: got status %d, stderr %q; want 1 and a refusal", cmd, status, errOut)
		}
	}

	// Usage errors never reach metad.
	for _, args := range [][]string{{"frobnicate"}, {"kill", "web", "NOSUCHSIG"}, {"start"}, {"start", "a", "b"}, {"version", "x"}} {
		_, errOut, status := c.run(args...)
		if status != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "--help") {
			t.Errorf("metac %v: got status %d, stderr %q; want 2 and one line pointing to --help", args, status, errOut)
		}
	}
	if n := m.count(msg("control request")); n == 0 || m.count(func(ev event) bool { return ev.str("cmd") == "frobnicate" }) != 0 {
		t.Errorf("a usage error reached metad")
	}

	// shutdown: metad stops everything and exits 0.
	c.must("shutdown")
	if got := m.wait(waitLimit); got != 0 {
		t.Errorf("after shutdown: got exit status %d, want 0", got)
	}
	if alive(later) {
		t.Errorf("after shutdown: instance %d of later is still alive", later)
	}
}

func TestCtlLocalUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	_, errOut, status := runBin(t, metacBin, "-s", sock, "list")
	if status != 2 || !strings.HasPrefix(errOut, "metac: cannot reach metad at "+sock+": ") {
		t.Errorf("got status %d, stderr %q; want 2 and cannot reach metad at %s", status, errOut, sock)
	}
	_, errOut, status = runBin(t, metadBin, "ctl", "-s", sock, "list")
	if status != 2 || !strings.HasPrefix(errOut, "metad ctl: cannot reach metad at ") {
		t.Errorf("metad ctl: got status %d, stderr %q; want 2 and cannot reach metad", status, errOut)
	}
}

func TestCtlLocalSocketReplacedOrKept(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "shared.sock")
	// A socket file nobody listens on: what a killed metad leaves.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	first := startMetad(t, runOpts{conf: "web daemon /bin/sleep 1000\n", args: []string{"-s", sock}})
	first.waitEvent(1, "the stale socket to be replaced", msg("control socket listening"))
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("got %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}
	if out, errOut, status := runBin(t, metacBin, "-s", sock, "version"); status != 0 {
		t.Fatalf("got status %d, %q, %q; want the new metad to answer", status, out, errOut)
	}

	// A second metad on the same socket leaves the first one serving.
	second := startMetad(t, runOpts{conf: "other daemon /bin/sleep 1000\n", args: []string{"-s", sock}})
	ev := second.waitEvent(1, "the second metad to give up the socket", msg("cannot start control"))
	if !strings.Contains(ev.str("error"), "another metad is listening") {
		t.Errorf("got %q, want another metad is listening", ev.str("error"))
	}
	out, _, status := runBin(t, metacBin, "-s", sock, "--json", "list")
	if h := parseHosts(t, out); status != 0 || len(h) != 1 || len(h[0].Services) != 1 || h[0].Services[0].Name != "web" {
		t.Errorf("got status %d, %q; want the first metad (service web) to answer", status, out)
	}
}

// runAs runs bin with args as user and group uid and returns stderr and
// the exit status.
func runAs(t *testing.T, uid uint32, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var errb strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return errb.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("cannot run %s as uid %d: %v", bin, uid, err)
	}
	return errb.String(), 0
}

func TestCtlLocalRefusesOtherUsers(t *testing.T) {
	requireRoot(t)
	const nobody = 65534
	// A directory any user may enter, holding the socket and metac.
	dir, err := os.MkdirTemp("", "metad-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	metac := filepath.Join(dir, "metac")
	copyMetadTo(t, metac)
	sock := filepath.Join(dir, "metad.sock")
	m := startMetad(t, runOpts{conf: "web daemon /bin/sleep 1000\n", args: []string{"-s", sock}})
	m.waitEvent(1, "the control socket", msg("control socket listening"))

	// Mode 0600 stops another user at connect.
	errOut, status := runAs(t, nobody, metac, "-s", sock, "stop", "web")
	if status != 2 || !strings.Contains(errOut, "cannot reach metad at "+sock) || !strings.Contains(errOut, "permission denied") {
		t.Errorf("through mode 0600: got status %d, stderr %q; want 2 and permission denied", status, errOut)
	}

	// With the mode opened (as a careless administrator might), the peer
	// credentials still refuse.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	errOut, status = runAs(t, nobody, metac, "-s", sock, "stop", "web")
	if status != 1 || !strings.Contains(errOut, "permission denied: uid 65534 may not control metad") {
		t.Errorf("through mode 0666: got status %d, stderr %q; want 1 and the uid refused", status, errOut)
	}
	ev := m.waitEvent(1, "the refusal to be logged", msg("refused control connection"))
	if ev.int("uid") != nobody {
		t.Errorf("got uid %v logged, want %d", ev["uid"], nobody)
	}
	if s := (ctl{t, sock}).listJSON("web").Services[0]; !*s.Enabled || len(s.Instances) != 1 {
		t.Errorf("got %+v, want web untouched", s)
	}
	if slices.ContainsFunc(m.matching(msg("control request")), func(ev event) bool { return ev.str("cmd") == "stop" }) {
		t.Errorf("a refused peer's stop reached the supervisor")
	}
}

func TestCtlLocalSocketRemovedOnExit(t *testing.T) {
	for _, how := range []string{"shutdown", "SIGTERM"} {
		m := startMetad(t, runOpts{conf: "web daemon /bin/sleep 1000\n"})
		m.waitEvent(1, "the control socket", msg("control socket listening"))
		c := ctlOf(m)
		if how == "shutdown" {
			c.must("shutdown")
		} else {
			m.signal(syscall.SIGTERM)
		}
		if got := m.wait(waitLimit); got != 0 {
			t.Errorf("%s: got exit status %d, want 0", how, got)
		}
		if _, err := os.Lstat(c.sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: got %v for the socket after metad exited, want it removed", how, err)
		}
	}
}
