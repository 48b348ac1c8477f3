package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted
// (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid system), or ""
// when there is none.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	best := ""
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f := strings.Fields(pre); ok && strings.HasPrefix(post, "cgroup2 ") && len(f) >= 5 && f[3] == "/" {
			if best == "" || f[4] == "/sys/fs/cgroup" {
				best = f[4]
			}
		}
	}
	return best
}

// cgroupOf returns the directory of pid's cgroup v2 under mnt, or "" when
// pid is gone.
func cgroupOf(mnt string, pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mnt, path)
		}
	}
	return ""
}

// TestCgroupCustodyTakesSetsid: a daemon leaves a process behind that
// called setsid and ignores SIGTERM, so that neither its process group
// nor its session finds it. With a cgroup per service it is in custody
// (listed by metac), killed after the stop timeout before the next start,
// and again at shutdown; the service's cgroup is under metad's while it
// runs, kept across a re-exec, and is gone, with metad's, once metad has
// exited.
func TestCgroupCustodyTakesSetsid(t *testing.T) {
	requireRoot(t)
	mnt := cgroup2Mount(t)
	if mnt == "" {
		t.Skip("no cgroup v2 hierarchy mounted")
	}
	dir := t.TempDir()
	strays := filepath.Join(dir, "strays")
	// Unique to this run, to find the strays whatever happens.
	marker := strconv.Itoa(500000 + os.Getpid())
	// Each run leaves a stray in a session of its own that ignores
	// SIGTERM, once it has called setsid; the first run then crashes, the
	// second stays.
	script := `setsid sh -c 'trap "" TERM; exec sleep ` + marker + `' & p=$!; ` +
		`while [ "$(cut -d' ' -f6 /proc/$p/stat)" != "$p" ]; do :; done; ` +
		`echo $p >> ` + strays + `; ` +
		`[ "$(wc -l < ` + strays + `)" -gt 1 ] && exec sleep 1000; ` +
		`exit 1`
	t.Cleanup(func() {
		for _, line := range fileLines(strays) {
			if pid, err := strconv.Atoi(line); err == nil && alive(pid) && strings.Contains(cmdline(pid), marker) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	conf := "setsidstray daemon /bin/sh -c " + shq(script) + "\n"
	m := startMetad(t, runOpts{conf: conf, args: []string{"--stop-timeout", "3s"}})
	sock := filepath.Join(m.dir, "metad.sock")
	m.waitEvent(1, "the control socket", msg("control socket listening"))

	// The first run's stray is taken into custody and listed.
	m.waitEvent(1, "the stray to be taken into custody", msg("stopping leftovers", "setsidstray"))
	first, _ := strconv.Atoi(waitFileLines(t, strays, 1)[0])
	out, errOut, status := runBin(t, metacBin, "list", "setsidstray", "--json", "-s", sock)
	var host struct {
		Services []struct {
			Name    string `json:"name"`
			State   string `json:"state"`
			Custody []int  `json:"custody"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &host); status != 0 || err != nil || len(host.Services) != 1 {
		t.Fatalf("metac list --json: got status %d, stdout %q, stderr %q, error %v", status, out, errOut, err)
	}
	if got := host.Services[0]; !slices.Contains(got.Custody, first) {
		t.Errorf("metac list --json: got custody %v in state %s, want the stray %d", got.Custody, got.State, first)
	}

	// It is gone before the second start.
	second := m.waitEvent(2, "the second start", msg("started", "setsidstray")).int("pid")
	if alive(first) {
		t.Errorf("stray %d of the first run is alive after the second start", first)
	}
	if m.count(msg("killed leftovers", "setsidstray")) == 0 {
		t.Errorf("the stray that ignores SIGTERM was not killed")
	}
	// The second run's stray and the instance are in the service's cgroup,
	// under metad's.
	next, _ := strconv.Atoi(waitFileLines(t, strays, 2)[1])
	svcDir := cgroupOf(mnt, second)
	if filepath.Base(svcDir) != "setsidstray.service" || cgroupOf(mnt, next) != svcDir {
		t.Fatalf("got instance in cgroup %q, stray in %q; want both in the service's", svcDir, cgroupOf(mnt, next))
	}
	metadDir := cgroupOf(mnt, m.cmd.Process.Pid)
	if filepath.Dir(filepath.Dir(svcDir)) != metadDir {
		t.Errorf("got the service's cgroup %q, want it two levels under metad's %q", svcDir, metadDir)
	}

	// A re-exec keeps the cgroups: the new image takes them over.
	if _, errOut, status := runBin(t, metacBin, "-s", sock, "reexec"); status != 0 {
		t.Fatalf("metac reexec: got status %d, stderr %q", status, errOut)
	}
	m.waitEvent(1, "the new image to take over", msg("took over from the previous metad"))
	if got := cgroupOf(mnt, second); got != svcDir || !alive(next) {
		t.Fatalf("after the re-exec: got the instance in cgroup %q, stray alive %v; want %q, true", got, alive(next), svcDir)
	}

	// At shutdown, the stray is stopped too, and the cgroups are removed.
	m.signal(syscall.SIGTERM)
	if status := m.wait(waitLimit); status != 0 {
		t.Errorf("metad exited %d, want 0", status)
	}
	if alive(next) {
		t.Errorf("stray %d of the second run outlived metad", next)
	}
	for _, d := range []string{svcDir, filepath.Dir(svcDir)} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("cgroup %q is still there after metad exited (%v)", d, err)
		}
	}
}

// fileLines returns the lines of file now, none if it is absent.
func fileLines(file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// cmdline returns pid's command line, words joined by spaces.
func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.ReplaceAll(string(b), "\x00", " ")
}

// TestCgroupOfServiceNoLongerConfigured: a metad killed outright leaves
// its services running in their cgroups; a metad started again on the
// same socket takes its cgroups over and stops and removes those of
// services its config no longer has.
func TestCgroupOfServiceNoLongerConfigured(t *testing.T) {
	requireRoot(t)
	mnt := cgroup2Mount(t)
	if mnt == "" {
		t.Skip("no cgroup v2 hierarchy mounted")
	}
	sock := filepath.Join(t.TempDir(), "metad.sock")
	marker := strconv.Itoa(600000 + os.Getpid())
	m := startMetad(t, runOpts{conf: "ghost daemon /bin/sleep " + marker + "\n", args: []string{"-s", sock}})
	pid := m.waitEvent(1, "ghost to start", msg("started", "ghost")).int("pid")
	t.Cleanup(func() {
		if alive(pid) && strings.Contains(cmdline(pid), marker) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	ghostDir := cgroupOf(mnt, pid)
	m.signal(syscall.SIGKILL)
	m.wait(waitLimit)
	if !alive(pid) || filepath.Base(ghostDir) != "ghost.service" {
		t.Fatalf("after metad was killed: got ghost alive %v in cgroup %q, want alive in ghost.service", alive(pid), ghostDir)
	}

	m2 := startMetad(t, runOpts{conf: "other daemon /bin/sleep 1000\n", args: []string{"-s", sock}})
	other := m2.waitEvent(1, "other to start", msg("started", "other")).int("pid")
	if got := filepath.Dir(cgroupOf(mnt, other)); got != filepath.Dir(ghostDir) {
		t.Errorf("got the new metad's services in %q, want the same cgroups as before, %q", got, filepath.Dir(ghostDir))
	}
	m2.waitEvent(1, "the ghost to be stopped", msg("stopping what a service no longer configured left", "ghost"))
	// Removed only once empty: the ghost has ended by then.
	m2.waitEvent(1, "the ghost's cgroup removed", msg("removed the cgroup of a service no longer configured", "ghost"))
	if _, err := os.Stat(ghostDir); alive(pid) || !os.IsNotExist(err) {
		t.Fatalf("ghost alive %v, its cgroup %q there (%v); want neither", alive(pid), ghostDir, err)
	}
	m2.signal(syscall.SIGTERM)
	m2.wait(waitLimit)
	if _, err := os.Stat(filepath.Dir(ghostDir)); !os.IsNotExist(err) {
		t.Errorf("cgroup %q is still there after metad exited (%v)", filepath.Dir(ghostDir), err)
	}
}
