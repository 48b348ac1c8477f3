package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIssue12ListShowsTheRealNextStart is defect 5 of issue 12: a
// min=1 period=1h daemon whose first run crashes is restarted after the
// backoff (1s), and metac list says so, not "in 1h".
func TestIssue12ListShowsTheRealNextStart(t *testing.T) {
	dir := t.TempDir()
	flag := filepath.Join(dir, "crashed-once")
	arg := marker()
	killLeftovers(t, sleeping(arg))
	script := `if [ -e ` + flag + ` ]; then exec sleep ` + arg + `; fi; touch ` + flag + `; exit 1`
	m := startMetad(t, runOpts{conf: "hourly daemon min=1 period=1h /bin/sh -c " + shq(script) + "\n"})
	c := ctlOf(m)
	m.waitEvent(1, "the first run to crash", msg("backoff", "hourly"))
	asked := time.Now()
	s := c.listServices("hourly")[0]
	next, _ := s["next_start"].(string)
	restarted := len(procsWhere(sleeping(arg))) > 0
	if next == "" && !restarted {
		t.Fatalf("in backoff, metac --json list shows no next start: %v", s)
	}
	if next != "" {
		at, err := time.Parse(time.RFC3339Nano, next)
		if err != nil {
			t.Fatalf("next_start %q: %v", next, err)
		}
		// The backoff after a first crash is 1s; a slow machine may list
		// it late, never an hour ahead.
		if d := at.Sub(asked); d > 5*time.Second || d < -5*time.Second {
			t.Errorf("metac list says the next start is in %v, want within a few seconds (the 1s backoff): %v", d.Round(time.Second), s)
		}
	}
	if !pollUntil(waitLimit, func() bool { return len(procsWhere(sleeping(arg))) == 1 }) {
		t.Errorf("hourly was not restarted after its first crash within %v", waitLimit)
	}
}

// loggedAfter waits, for at most limit, for a log event at level warn or
// error, from the from-th event on, whose message or error contains one
// of words; it reports whether there was one.
func (m *instance) loggedAfter(from int, limit time.Duration, words ...string) bool {
	return m.waitSince(from, limit, func(ev event) bool {
		if lvl := ev.str("level"); lvl != "warn" && lvl != "error" {
			return false
		}
		text := strings.ToLower(ev.str("message") + " " + ev.str("error"))
		return slices.ContainsFunc(words, func(w string) bool { return strings.Contains(text, w) })
	})
}

// eventCount is how many log events metad has written so far.
func (m *instance) eventCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.events)
}

// TestIssue12ListOrderAndRefusalsLogged is defect 7 of issue 12: list
// shows the services in config order, before and after metac reexec;
// a failed metac reload and a refused metac reexec are logged (at warn
// or error, SPEC §13), not only answered.
func TestIssue12ListOrderAndRefusalsLogged(t *testing.T) {
	bin := copyMetad(t, "metad")[0]
	arg := marker()
	killLeftovers(t, sleeping(arg))
	order := []string{"zulu", "alpha", "mike", "bravo", "yankee", "charlie", "xray", "delta"}
	var conf strings.Builder
	for _, n := range order {
		fmt.Fprintf(&conf, "%s daemon /bin/sleep %s\n", n, arg)
	}
	m := startMetad(t, runOpts{conf: conf.String(), bin: bin})
	c := ctlOf(m)
	m.waitEvent(len(order), "every service to start", msg("started"))
	if got := serviceNames(c.listServices()); !slices.Equal(got, order) {
		t.Errorf("list: got %v, want config order %v", got, order)
	}
	for i := 1; i <= 3; i++ {
		c.must("reexec")
		m.waitEvent(i, "the new image", msg("took over from the previous metad"))
		if got := serviceNames(c.listServices()); !slices.Equal(got, order) {
			t.Errorf("list after re-exec %d: got %v, want config order %v", i, got, order)
		}
	}

	// A failed reload is logged.
	from := m.eventCount()
	m.rewrite(conf.String() + "bad daemon mx=3 /bin/true\n")
	if out, errOut, status := c.run("reload"); status != 1 {
		t.Errorf("metac reload of a bad config: got status %d, %q %q; want 1", status, out, errOut)
	}
	if !m.loggedAfter(from, 5*time.Second, "reload", "metad.conf:") {
		t.Errorf("a failed metac reload was not logged at warn or error")
	}
	m.rewrite(conf.String())

	// A refused re-exec is logged.
	from = m.eventCount()
	os.Remove(bin)
	if err := os.WriteFile(bin, []byte("not a program at all\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, errOut, status := c.run("reexec"); status != 1 {
		t.Errorf("metac reexec into a broken binary: got status %d, %q %q; want 1", status, out, errOut)
	}
	if !m.loggedAfter(from, 5*time.Second, "re-exec", "reexec") {
		t.Errorf("a refused metac reexec was not logged at warn or error")
	}
	if got := serviceNames(c.listServices()); !slices.Equal(got, order) {
		t.Errorf("list after the refusals: got %v, want config order %v", got, order)
	}
}
