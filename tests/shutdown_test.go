package tests

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// markedDaemon is a config line for a daemon that appends its pid to
// file when it runs and then sleeps with arg as its marker.
func markedDaemon(name, opts, file, arg string) string {
	return name + " daemon " + opts + " /bin/sh -c " + shq("echo $$ >> "+file+"; exec sleep "+arg) + "\n"
}

// markerWritten reports whether a marker file has been written.
func markerWritten(t *testing.T, file string) bool {
	t.Helper()
	_, err := os.Stat(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// TestIssue12NothingStartsDuringShutdown is defect 4 of issue 12: a
// service ignores SIGTERM, so the shutdown waits out the stop timeout;
// meanwhile metac asks to start and enable a disabled service and to
// reload a config that adds one. Nothing new starts (neither program
// ever runs), metad exits within --stop-timeout + 2s, and nothing of any
// service survives it. The control requests may be refused or not
// answered at all; they must not start anything.
func TestIssue12NothingStartsDuringShutdown(t *testing.T) {
	dir := t.TempDir()
	stub, late, added := marker(), marker(), marker()
	for _, arg := range []string{stub, late, added} {
		killLeftovers(t, sleeping(arg))
	}
	stubRan := filepath.Join(dir, "stubborn.ran")
	lateRan, addedRan := filepath.Join(dir, "later.ran"), filepath.Join(dir, "added.ran")
	// The shell ignores TERM and execs sleep, which keeps it ignored. It
	// may run twice: metac start has room for a second instance.
	conf := "stubborn daemon max=2 /bin/sh -c " + shq(`echo $$ >> `+stubRan+`; trap "" TERM; exec sleep `+stub) + "\n" +
		markedDaemon("later", "disabled", lateRan, late)
	const stop = 3 * time.Second
	m := startMetad(t, runOpts{conf: conf, args: []string{"--stop-timeout", stop.String()}})
	c := ctlOf(m)
	m.waitEvent(1, "the control socket", msg("control socket listening"))
	if !pollUntil(waitLimit, func() bool { return len(procsWhere(sleeping(stub))) == 1 }) {
		t.Fatalf("stubborn's sleep %s is not running", stub)
	}

	sent := time.Now()
	m.signal(syscall.SIGTERM)
	m.waitEvent(1, "metad to begin its shutdown", func(ev event) bool {
		return strings.Contains(ev.str("message"), "shutting down")
	})
	for _, args := range [][]string{{"start", "stubborn"}, {"start", "later"}, {"enable", "later"}, {"reload"}} {
		if args[0] == "reload" {
			m.rewrite(conf + markedDaemon("added", "", addedRan, added))
		}
		out, status := c.ctlTry(stop, args...)
		t.Logf("during the shutdown, metac %v: status %d, %q", args, status, out)
	}
	if exited, _ := m.waitExitOr(stop + 2*time.Second - time.Since(sent)); !exited {
		t.Errorf("metad has not exited %v after SIGTERM, want within --stop-timeout + 2s", time.Since(sent))
	}
	// metad has exited: whatever it started has run by now.
	if pids := readLines(t, stubRan); len(pids) != 1 {
		t.Errorf("metac start during the shutdown started stubborn again: got instances %v, want only the first", pids)
	}
	if markerWritten(t, lateRan) {
		t.Errorf("metac start/enable during the shutdown started later (pid %s)", readLines(t, lateRan))
	}
	if markerWritten(t, addedRan) {
		t.Errorf("metac reload during the shutdown started the added service (pid %s)", readLines(t, addedRan))
	}
	ofServices := func(p proc) bool { return sleeping(stub)(p) || sleeping(late)(p) || sleeping(added)(p) }
	if left := waitNone(time.Second, ofServices); len(left) > 0 {
		t.Errorf("processes of services survive metad: %s", describe(left))
	}
}

// TestIssue12SecondMetadRefuses is defect 6 of issue 12 (SPEC §9): a
// second metad on the control socket a live metad answers exits 1 and
// starts nothing; with -s naming another socket it starts.
func TestIssue12SecondMetadRefuses(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "shared.sock")
	first, second := marker(), marker()
	killLeftovers(t, sleeping(first))
	killLeftovers(t, sleeping(second))
	a := startMetad(t, runOpts{conf: "first daemon /bin/sleep " + first + "\n", args: []string{"-s", sock}})
	a.waitEvent(1, "the control socket", msg("control socket listening"))
	shared := ctl{t, sock}
	shared.must("version")

	secondRan := filepath.Join(dir, "second.ran")
	conf := markedDaemon("second", "", secondRan, second)
	b := startMetad(t, runOpts{conf: conf, args: []string{"-s", sock}})
	exited, status := b.waitExitOr(waitLimit / 2)
	if !exited {
		t.Errorf("a second metad on %s still runs after %v, want it to refuse and exit 1", sock, waitLimit/2)
		b.cmd.Process.Kill()
		b.wait(waitLimit)
	} else if status != 1 {
		t.Errorf("a second metad on %s: got exit status %d, want 1", sock, status)
	}
	if markerWritten(t, secondRan) {
		t.Errorf("the second metad started its service (pid %s)", readLines(t, secondRan))
	}
	if got := serviceNames(shared.listServices()); len(got) != 1 || got[0] != "first" {
		t.Errorf("on %s: got services %v, want the first metad's [first]", sock, got)
	}

	// With a socket of its own, the same config starts.
	otherRan := filepath.Join(dir, "other.ran")
	other := startMetad(t, runOpts{conf: markedDaemon("second", "", otherRan, second)})
	waitFileLines(t, otherRan, 1)
	other.waitEvent(1, "the control socket", msg("control socket listening"))
	if got := serviceNames(ctlOf(other).listServices()); len(got) != 1 || got[0] != "second" {
		t.Errorf("on its own socket: got services %v, want [second]", got)
	}
}
