package tests

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ctlTry runs metac with args against c's socket, bounded by limit, and
// returns its combined output and exit status (-1 when it had to be
// killed): the control requests of these tests may legitimately be
// refused, but never hang.
func (c ctl) ctlTry(limit time.Duration, args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	out, err := exec.CommandContext(ctx, metacBin, append([]string{"-s", c.sock}, args...)...).CombinedOutput()
	if ctx.Err() != nil {
		return string(out), -1
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		return err.Error(), -1
	}
	return string(out), 0
}

// crashClients makes n connections to addr that send a line and close;
// the crashy program behind them fails whatever they do.
func crashClients(addr string, n int) {
	for range n {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue // refused while disabled, or queued: either is fine
		}
		fmt.Fprintln(c, "hello")
		c.Close()
	}
}

// TestIssue12StreamNeverWedges is defect 1 of issue 12: a stream service
// running a real inetd program (git daemon --inetd) next to a
// crash-looping stream service, the control sequence reload, start,
// restart, disable, enable, stop, enable, reload on the crashy one with
// client connections in between, then SIGTERM. Every round, git daemon
// answers throughout and metad exits within --stop-timeout + 2s. Each
// round keeps four instances of the crashy service running across a
// reload that lowers its max below four, and restart then ends them: the
// slots taken before the reload are given back after it, which is where
// the slot accounting of metad 9739c5e gave back more than it held and
// its acceptor blocked for ever on the next stop (metac disable hung,
// then the shutdown).
func TestIssue12StreamNeverWedges(t *testing.T) {
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skip("needs git (installed by .ci/run)")
	}
	base, commit := gitRepo(t)
	crashMark := marker()
	// Every process either service starts: the git daemons serve base, the
	// crashy shells carry the marker.
	killLeftovers(t, func(p proc) bool {
		return slices.ContainsFunc(p.argv, func(a string) bool { return strings.Contains(a, crashMark) || a == "--base-path="+base })
	})
	crashyProc := func(p proc) bool {
		return slices.ContainsFunc(p.argv, func(a string) bool { return strings.Contains(a, crashMark) })
	}
	const stop = time.Second
	const rounds = 20
	start := time.Now()
	for round := 1; round <= rounds; round++ {
		gport, cport := freePort(t), freePort(t)
		crashAddr := fmt.Sprintf("127.0.0.1:%d", cport)
		confOf := func(max int) string {
			return fmt.Sprintf("git stream port=%d addr=127.0.0.1 %s daemon --inetd --export-all --base-path=%s %s\n", gport, gitBin, base, base) +
				fmt.Sprintf("crashy stream port=%d addr=127.0.0.1 max=%d backoff=200ms /bin/sh -c %s\n", cport, max, shq("read x; exit 1 # "+crashMark))
		}
		m := startMetad(t, runOpts{conf: confOf(4), args: []string{"--stop-timeout", stop.String()}})
		c := ctlOf(m)
		m.waitListening("git")
		m.waitListening("crashy")
		serves := func(when string) {
			t.Helper()
			out, err := gitLsRemote(gport)
			if err != nil || !strings.HasPrefix(out, commit) {
				t.Errorf("round %d, %s: git ls-remote: got %q, %v; want the commit %s", round, when, out, err, commit)
			}
		}
		serves("at start")
		// Crashes hold slots for the backoff (once one has crashed, the
		// next clients may be refused, coming from an address in
		// backoff); then four clients that keep their connection open
		// keep four instances running. They come from an address of
		// their own.
		crashClients(crashAddr, 3)
		m.waitEvent(1, "crashy to crash", msg("exited", "crashy"))
		var holding []net.Conn
		for range 4 {
			h, err := dialFrom("127.0.0.5", crashAddr, waitLimit)
			if err != nil {
				t.Fatalf("round %d: cannot connect to crashy: %v", round, err)
			}
			holding = append(holding, h)
			t.Cleanup(func() { h.Close() })
		}
		running := func() int { return len(procsWhere(crashyProc)) }
		if !pollUntil(waitLimit, func() bool { return running() == 4 }) {
			t.Fatalf("round %d: got %d instances of crashy, want the 4 of the clients that hold their connection", round, running())
		}
		maxes := [][2]int{{1, 3}, {2, 4}}[round%2]
		steps := []string{"reload", "start", "restart", "disable", "enable", "stop", "enable", "reload"}
		reloads := 0
		for _, step := range steps {
			args := []string{step, "crashy"}
			if step == "reload" {
				m.rewrite(confOf(maxes[reloads]))
				reloads++
				args = []string{"reload"}
			}
			out, status := c.ctlTry(5*time.Second, args...)
			if status < 0 {
				t.Errorf("round %d: metac %s did not answer in 5s: %q", round, strings.Join(args, " "), out)
				break
			}
			switch step {
			case "restart":
				// The four instances are stopped: wait until they have
				// ended. (Were restart refused for a stream, the clients
				// end them.)
				if status != 0 {
					for _, h := range holding {
						h.Close()
					}
				}
				if !pollUntil(waitLimit, func() bool { return running() == 0 }) {
					t.Errorf("round %d: %d instances of crashy still run after restart", round, running())
				}
				serves("after restart")
			case "enable":
				serves("after enable")
				crashClients(crashAddr, 2)
			}
		}
		for _, h := range holding {
			h.Close()
		}
		serves("before SIGTERM")
		sent := time.Now()
		m.signal(syscall.SIGTERM)
		if exited, _ := m.waitExitOr(stop + 2*time.Second); !exited {
			t.Errorf("round %d: metad has not exited %v after SIGTERM, want within --stop-timeout + 2s", round, time.Since(sent))
			m.cmd.Process.Kill()
			m.wait(waitLimit)
			return
		}
		if t.Failed() {
			return
		}
	}
	t.Logf("%d rounds in %v", rounds, time.Since(start))
}
