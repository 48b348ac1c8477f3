package tests

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// stubbornProg ignores the stop signal: only SIGKILL ends it.
const stubbornProg = `/bin/sh -c 'trap "" TERM; while :; do sleep 1; done'`

// waitConf has a daemon to restart, two that ignore SIGTERM, one that
// fails at once, and one that runs only when started.
const waitConf = "web daemon /bin/sleep 1000\n" +
	"stubborn daemon " + stubbornProg + "\n" +
	"stubborn2 daemon " + stubbornProg + "\n" +
	"crashy daemon disabled /bin/sh -c 'exit 3'\n" +
	"later daemon disabled /bin/sleep 1000\n"

// TestCtlWaitForOutcome: start, stop and restart print the outcome of each
// service once it is known, and their exit status says whether it is the
// one asked for; --no-wait returns at once; wait waits until ready.
func TestCtlWaitForOutcome(t *testing.T) {
	m := startMetad(t, runOpts{conf: waitConf, args: []string{"--stop-timeout", "2s", "-k", "/nonexistent"}})
	web := m.waitEvent(1, "web to start", msg("started", "web")).int("pid")
	m.waitEvent(1, "stubborn to start", msg("started", "stubborn"))
	m.waitEvent(1, "stubborn2 to start", msg("started", "stubborn2"))
	m.waitEvent(1, "the control socket", msg("control socket listening"))
	c := ctlOf(m)

	// stop of a program that ignores SIGTERM: killed after the stop
	// timeout, and metac returns once it is.
	sent := time.Now()
	out, errOut, status := c.run("stop", "stubborn")
	took := time.Since(sent)
	if status != 0 || errOut != "" || !regexp.MustCompile(`^stubborn: killed after 2(\.\d)?s\n$`).MatchString(out) {
		t.Errorf("metac stop stubborn: got status %d, stdout %q, stderr %q; want 0 and %q", status, out, errOut, "stubborn: killed after 2s")
	}
	if took < 2*time.Second || took > waitLimit {
		t.Errorf("metac stop stubborn: returned after %v, want after the 2s stop timeout", took)
	}
	if n := m.count(msg("exited", "stubborn")); n != 1 {
		t.Errorf("metac stop stubborn returned with %d ends of stubborn logged, want 1", n)
	}

	// --no-wait: metac returns while the instance is still stopping.
	pid := c.listJSON("stubborn2").Services[0].Instances[0].PID
	out, errOut, status = c.run("stop", "--no-wait", "stubborn2")
	if status != 0 || out != "" || errOut != "" {
		t.Errorf("metac stop --no-wait: got status %d, stdout %q, stderr %q; want 0 and nothing", status, out, errOut)
	}
	if !alive(pid) || m.count(exitedPID(pid)) != 0 {
		t.Errorf("metac stop --no-wait returned after stubborn2 ended, want before its 2s stop timeout")
	}
	m.waitEvent(1, "stubborn2 to be killed", exitedPID(pid))

	// start of a program that exits 3 at once: the failure, and exit 1.
	out, errOut, status = c.run("start", "crashy")
	if status != 1 || out != "" || !strings.HasPrefix(errOut, "metac: crashy: ") || !strings.Contains(errOut, "exit status 3") {
		t.Errorf("metac start crashy: got status %d, stdout %q, stderr %q; want 1 and the failure with exit status 3", status, out, errOut)
	}

	// restart: ready with the new instance's pid.
	out, errOut, status = c.run("restart", "web")
	started := m.waitEvent(2, "web to start again", msg("started", "web")).int("pid")
	if want := "web: ready (pid " + strconv.Itoa(started) + ")\n"; status != 0 || out != want || errOut != "" || started == web {
		t.Errorf("metac restart web: got status %d, stdout %q, stderr %q; want 0 and %q, a new pid", status, out, errOut, want)
	}

	// start of a disabled service: it runs the one instance, with its pid.
	out, errOut, status = c.run("start", "later")
	later := m.waitEvent(1, "later to start", msg("started", "later")).int("pid")
	if want := "later: started (pid " + strconv.Itoa(later) + ", disabled)\n"; status != 0 || out != want || errOut != "" {
		t.Errorf("metac start later: got status %d, stdout %q, stderr %q; want 0 and %q", status, out, errOut, want)
	}

	// --json: the outcomes in the host's line.
	out, _, status = c.run("--json", "stop", "later", "stubborn")
	var line struct {
		OK       bool
		Error    string
		Outcomes []struct {
			Service string
			OK      bool
			Outcome string
		}
	}
	if err := json.Unmarshal([]byte(out), &line); err != nil || status != 0 || !line.OK || line.Error != "" || len(line.Outcomes) != 2 {
		t.Errorf("metac --json stop later stubborn: got status %d, %q (%v); want one ok line with two outcomes", status, out, err)
	}
	for _, oc := range line.Outcomes {
		if want := map[string]string{"later": "stopped", "stubborn": "stopped (was not running)"}[oc.Service]; !oc.OK || oc.Outcome != want {
			t.Errorf("metac --json stop: got %+v, want %s %q", oc, oc.Service, want)
		}
	}

	// wait: ready at once for a ready service; a timeout names the one
	// not ready, whether -t comes before the command or after it.
	out, errOut, status = c.run("wait", "web")
	if want := "web: ready (pid " + strconv.Itoa(started) + ")\n"; status != 0 || out != want || errOut != "" {
		t.Errorf("metac wait web: got status %d, stdout %q, stderr %q; want 0 and %q", status, out, errOut, want)
	}
	for _, args := range [][]string{{"wait", "-t", "1s", "web", "later"}, {"-t", "1s", "wait", "later", "web"}} {
		out, errOut, status = c.run(args...)
		if status != 1 || !strings.Contains(out, "web: ready") || errOut != "metac: later: not ready within 1s: disabled\n" {
			t.Errorf("metac %s: got status %d, stdout %q, stderr %q; want 1, web ready and later not", strings.Join(args, " "), status, out, errOut)
		}
	}
	if _, errOut, status = c.run("wait", "nope"); status != 1 || errOut != "metac: unknown service \"nope\"\n" {
		t.Errorf("metac wait nope: got status %d, stderr %q; want 1 and the unknown service", status, errOut)
	}
}
