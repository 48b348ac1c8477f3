package tests

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The service lifecycle of SPEC §8 and the status of §13 (issue 13),
// through the real binary and real programs: readiness in each form a
// program speaks it, dependencies, one-shots, fail-fast, stop order and
// timeouts, metad as a notify client of its own parent, and what metac
// status and stop say.

// checkGatedReady checks that dep, a service with after=svc, waits while
// svc is starting and starts only after svc's ready line, svc becoming
// ready when the test opens gate. It returns svc's ready event.
func checkGatedReady(t *testing.T, m *instance, gate, svc, dep string) event {
	t.Helper()
	m.await(1, svc+" to be starting", stateTo(svc, "starting"))
	c := ctlOf(m)
	if n := m.count(msg("started", dep)); n != 0 {
		t.Fatalf("%s started while %s was starting, want it to wait", dep, svc)
	}
	c.waitStatus(dep, "it is waiting for "+svc, func(s map[string]any) bool {
		return jsonStr(s, "state") == "waiting" && strings.Contains(jsonStr(s, "reason"), svc)
	})
	openGate(t, gate)
	ready := m.await(1, svc+" to be ready", stateTo(svc, "ready"))
	m.await(1, dep+" to start", msg("started", dep))
	if r, d := m.index(stateTo(svc, "ready")), m.index(msg("started", dep)); d < r {
		t.Errorf("%s started (log event %d) before %s was ready (log event %d)", dep, d, svc, r)
	}
	return ready
}

// checkNotifyStatus checks that metac status shows the STATUS= text svc sent.
func checkNotifyStatus(t *testing.T, m *instance, svc, text string) {
	t.Helper()
	c := ctlOf(m)
	c.waitStatus(svc, fmt.Sprintf("notify_status %q", text), func(s map[string]any) bool {
		return jsonStr(s, "notify_status") == text
	})
	if out := c.statusText(svc); !strings.Contains(out, text) {
		t.Errorf("metac status %s: got\n%s\nwant it to contain the STATUS= text %q", svc, out, text)
	}
}

// TestLifecycleNotify: ready=notify speaks sd_notify as systemd does.
// Debian's systemd-notify, run by the service's shell (so the datagrams
// come from the shell's pid or from systemd-notify's own, a child in the
// service's session), and a Python program writing the wire format
// itself each gate an after= dependant, and their STATUS= text is shown
// by metac status. A datagram from a process outside the service does
// not make it ready.
func TestLifecycleNotify(t *testing.T) {
	t.Run("systemd-notify", func(t *testing.T) {
		sdNotify, err := exec.LookPath("systemd-notify")
		if err != nil {
			t.Skip("needs systemd-notify (Debian package systemd)")
		}
		dir := t.TempDir()
		gate := newGate(t, dir, "gate")
		self, dep := marker(), marker()
		killLeftovers(t, sleeping(self))
		killLeftovers(t, sleeping(dep))
		script := "read x < " + gate + "; " + sdNotify + ` --ready --status="warmed up"; exec sleep ` + self
		conf := "notifier daemon ready=notify /bin/sh -c " + shq(script) + "\n" +
			"dependant daemon after=notifier /bin/sleep " + dep + "\n"
		m := startMetad(t, runOpts{conf: conf})
		checkGatedReady(t, m, gate, "notifier", "dependant")
		checkNotifyStatus(t, m, "notifier", "warmed up")
	})

	t.Run("python", func(t *testing.T) {
		py := pythonBin(t)
		dir := t.TempDir()
		gate := newGate(t, dir, "gate")
		prog := writeProgram(t, dir, "notify.py", notifyScript)
		self, dep := marker(), marker()
		killLeftovers(t, sleeping(self))
		killLeftovers(t, sleeping(dep))
		conf := "notifier daemon ready=notify " + py + " " + prog + " " + gate + " " + shq("python warmed up") + " ready " + self + "\n" +
			"dependant daemon after=notifier /bin/sleep " + dep + "\n"
		m := startMetad(t, runOpts{conf: conf})
		checkGatedReady(t, m, gate, "notifier", "dependant")
		checkNotifyStatus(t, m, "notifier", "python warmed up")
	})

	t.Run("outsider ignored", func(t *testing.T) {
		py := pythonBin(t)
		dir := t.TempDir()
		gate := newGate(t, dir, "gate")
		prog := writeProgram(t, dir, "notify.py", notifyScript)
		self := marker()
		killLeftovers(t, sleeping(self))
		// The program sends only STATUS=genuine, never READY=1.
		conf := "lonely daemon ready=notify " + py + " " + prog + " " + gate + " genuine status-only " + self + "\n"
		m := startMetad(t, runOpts{conf: conf})
		pid := m.await(1, "lonely to start", msg("started", "lonely")).int("pid")
		m.await(1, "lonely to be starting", stateTo("lonely", "starting"))
		addr := environOf(t, pid)["NOTIFY_SOCKET"]
		if addr == "" {
			t.Fatalf("instance %d of a ready=notify service has no NOTIFY_SOCKET", pid)
		}
		sendNotify(t, addr, "READY=1\nSTATUS=outsider")
		// The program's own datagram follows ours on the same socket:
		// once its text shows, ours has been read too.
		openGate(t, gate)
		c := ctlOf(m)
		var s map[string]any
		var sawOutsider bool
		if !pollUntil(waitLimit, func() bool {
			s = c.statusJSON("lonely")
			sawOutsider = sawOutsider || jsonStr(s, "notify_status") == "outsider"
			return jsonStr(s, "notify_status") == "genuine"
		}) {
			t.Fatalf("metac --json status lonely: got %v, want notify_status \"genuine\" (the program's STATUS=)", s)
		}
		if sawOutsider {
			t.Errorf("metac status showed STATUS=outsider, sent by the test from outside the service")
		}
		if n := m.count(stateTo("lonely", "ready")); n != 0 {
			t.Errorf("lonely became ready on READY=1 from outside the service (pid %d's NOTIFY_SOCKET %q)", pid, addr)
		}
		if got := jsonStr(s, "state"); got != "starting" {
			t.Errorf("metac status lonely: got state %q, want starting (it never sent READY=1 itself)", got)
		}
	})
}

// TestLifecycleReadyForms: ready=fd:N (s6) and ready=tcp: gate an after=
// dependant; a program that is not ready within ready_timeout is
// stopped, counted as a crash, and started again after the backoff.
func TestLifecycleReadyForms(t *testing.T) {
	t.Run("fd", func(t *testing.T) {
		dir := t.TempDir()
		gate := newGate(t, dir, "gate")
		self, dep := marker(), marker()
		killLeftovers(t, sleeping(self))
		killLeftovers(t, sleeping(dep))
		script := "read x < " + gate + "; echo >&3; exec sleep " + self
		conf := "writer daemon ready=fd:3 /bin/sh -c " + shq(script) + "\n" +
			"dependant daemon after=writer /bin/sleep " + dep + "\n"
		m := startMetad(t, runOpts{conf: conf})
		checkGatedReady(t, m, gate, "writer", "dependant")
	})

	t.Run("tcp", func(t *testing.T) {
		py := pythonBin(t)
		dir := t.TempDir()
		gate := newGate(t, dir, "gate")
		prog := writeProgram(t, dir, "late_server.py", lateServerScript)
		port := freePort(t)
		self, dep := marker(), marker()
		killLeftovers(t, withArg(self))
		killLeftovers(t, sleeping(dep))
		conf := fmt.Sprintf("server daemon ready=tcp:%d %s %s %s %d %s\n", port, py, prog, gate, port, self) +
			"dependant daemon after=server /bin/sleep " + dep + "\n"
		m := startMetad(t, runOpts{conf: conf})
		checkGatedReady(t, m, gate, "server", "dependant")
	})

	t.Run("timeout", func(t *testing.T) {
		self := marker()
		killLeftovers(t, sleeping(self))
		conf := "slow daemon ready=notify ready_timeout=1s /bin/sleep " + self + "\n"
		m := startMetad(t, runOpts{conf: conf})
		first := m.await(1, "slow to start", msg("started", "slow")).int("pid")
		m.await(1, "the ready timeout to be logged", func(ev event) bool {
			if ev.str("svc") != "slow" {
				return false
			}
			text := strings.ToLower(ev.str("message") + " " + ev.str("reason") + " " + ev.str("error"))
			return strings.Contains(text, "ready") &&
				(strings.Contains(text, "timeout") || strings.Contains(text, "timed out") || strings.Contains(text, "in time"))
		})
		exit := m.await(1, "the instance to be stopped", exitedPID(first))
		t.Logf("the instance not ready in time ended: %s, outcome %s", exit.str("status"), exit.str("outcome"))
		m.await(1, "slow to back off", stateTo("slow", "backoff"))
		if s := ctlOf(m).statusJSON("slow"); jsonInt(s, "crashes") < 1 {
			t.Errorf("metac --json status slow after the ready timeout: got crashes %d, want at least 1", jsonInt(s, "crashes"))
		}
		second := m.await(2, "slow to start again after the backoff", msg("started", "slow")).int("pid")
		if second == first {
			t.Errorf("got the same pid %d for the second start", second)
		}
		if b, s := m.index(stateTo("slow", "backoff")), m.index(func(ev event) bool {
			return ev.str("message") == "started" && ev.int("pid") == second
		}); s < b {
			t.Errorf("slow started again (log event %d) before backing off (log event %d)", s, b)
		}
	})
}

// TestLifecycleOneShot: a restart=never daemon that exits 0 is done and
// lets its after= dependant start; one that exits 1 is failed, and the
// dependant never starts and says it waits for a failed dependency.
func TestLifecycleOneShot(t *testing.T) {
	t.Run("success", func(t *testing.T) {
		dir := t.TempDir()
		gate := newGate(t, dir, "gate")
		app := marker()
		killLeftovers(t, sleeping(app))
		conf := "migrate daemon restart=never /bin/sh -c " + shq("read x < "+gate+"; exit 0") + "\n" +
			"app daemon after=migrate /bin/sleep " + app + "\n"
		m := startMetad(t, runOpts{conf: conf})
		pid := m.await(1, "migrate to start", msg("started", "migrate")).int("pid")
		c := ctlOf(m)
		c.waitStatus("app", "it is waiting for migrate", func(s map[string]any) bool {
			return jsonStr(s, "state") == "waiting" && strings.Contains(jsonStr(s, "reason"), "migrate")
		})
		if n := m.count(msg("started", "app")); n != 0 {
			t.Fatalf("app started while migrate was running, want it to wait for migrate to end")
		}
		openGate(t, gate)
		m.await(1, "migrate to be done", stateTo("migrate", "done"))
		m.await(1, "app to start", msg("started", "app"))
		exited, done, started := m.index(exitedPID(pid)), m.index(stateTo("migrate", "done")), m.index(msg("started", "app"))
		if started < exited || started < done {
			t.Errorf("app started (log event %d) before migrate exited (%d) and was done (%d)", started, exited, done)
		}
		if s := c.statusJSON("migrate"); jsonStr(s, "state") != "done" {
			t.Errorf("metac status migrate: got state %q, want done", jsonStr(s, "state"))
		}
		if n := m.count(msg("started", "migrate")); n != 1 {
			t.Errorf("migrate started %d times, want once (restart=never)", n)
		}
	})

	t.Run("failure", func(t *testing.T) {
		app := marker()
		killLeftovers(t, sleeping(app))
		conf := "migrate daemon restart=never /bin/sh -c 'exit 1'\n" +
			"app daemon after=migrate /bin/sleep " + app + "\n"
		m := startMetad(t, runOpts{conf: conf})
		m.await(1, "migrate to fail", stateTo("migrate", "failed"))
		c := ctlOf(m)
		c.waitStatus("app", "it is waiting for migrate, which failed", func(s map[string]any) bool {
			reason := jsonStr(s, "reason")
			return jsonStr(s, "state") == "waiting" && strings.Contains(reason, "migrate") && strings.Contains(reason, "fail")
		})
		if out := c.statusText("app"); !strings.Contains(out, "waiting") || !strings.Contains(out, "migrate") {
			t.Errorf("metac status app: got\n%s\nwant it to say app is waiting for migrate", out)
		}
		if n := m.count(msg("started", "app")); n != 0 {
			t.Errorf("app started %d times after migrate failed, want never", n)
		}
	})
}

// TestLifecycleFailFast: on_failure=shutdown with retries=3 makes metad
// exit with the service's status (128+N for signal N) after its third
// crash, also as PID 1 of a PID namespace (a container's entrypoint);
// on_success=shutdown makes it exit 0 when the service is done.
func TestLifecycleFailFast(t *testing.T) {
	for _, pid1 := range []bool{false, true} {
		for _, tc := range []struct {
			name   string
			script string
			want   int
		}{
			{"exit 7", "exit 7", 7},
			{"killed by SIGUSR1", "kill -USR1 $$", 128 + int(syscall.SIGUSR1)},
		} {
			t.Run(fmt.Sprintf("on_failure/%s/pid1=%v", tc.name, pid1), func(t *testing.T) {
				other := marker()
				killLeftovers(t, sleeping(other))
				conf := "essential daemon retries=3 crash=1m backoff=100ms on_failure=shutdown /bin/sh -c " + shq(tc.script) + "\n" +
					"other daemon /bin/sleep " + other + "\n"
				m := startMetad(t, runOpts{pid1: pid1, conf: conf})
				if got := m.wait(waitLimit); got != tc.want {
					t.Errorf("got exit status %d, want %d (the essential service's)", got, tc.want)
				}
				if n := m.count(msg("started", "essential")); n != 3 {
					t.Errorf("essential started %d times, want 3 (retries=3)", n)
				}
				if m.index(stateTo("essential", "failed")) < 0 {
					t.Errorf("no state line of essential entering failed")
				}
				if m.index(msg("exited", "other")) < 0 {
					t.Errorf("other was not stopped before metad exited")
				}
			})
		}
		t.Run(fmt.Sprintf("on_success/pid1=%v", pid1), func(t *testing.T) {
			other := marker()
			killLeftovers(t, sleeping(other))
			conf := "job daemon restart=never on_success=shutdown /bin/sh -c 'exit 0'\n" +
				"other daemon /bin/sleep " + other + "\n"
			m := startMetad(t, runOpts{pid1: pid1, conf: conf})
			if got := m.wait(waitLimit); got != 0 {
				t.Errorf("got exit status %d, want 0", got)
			}
			if m.index(stateTo("job", "done")) < 0 {
				t.Errorf("no state line of job entering done")
			}
			if m.index(msg("exited", "other")) < 0 {
				t.Errorf("other was not stopped before metad exited")
			}
		})
	}
}

// TestLifecycleStopOrder: at shutdown services stop in reverse dependency
// order (web, then api, then db, whatever the order of the file), and a
// service's own stop_timeout bounds its stop, not metad's --stop-timeout.
func TestLifecycleStopOrder(t *testing.T) {
	db, api, web, stub := marker(), marker(), marker(), marker()
	for _, arg := range []string{db, api, web, stub} {
		killLeftovers(t, sleeping(arg))
	}
	// Neither the file's order nor its reverse is the order of the stops.
	conf := "api daemon after=db /bin/sleep " + api + "\n" +
		"web daemon after=api /bin/sleep " + web + "\n" +
		"db daemon /bin/sleep " + db + "\n" +
		"stubborn daemon stop_timeout=1s /bin/sh -c " + shq(`trap "" TERM; exec sleep `+stub) + "\n"
	const global = 30 * time.Second
	m := startMetad(t, runOpts{conf: conf, args: []string{"--stop-timeout", global.String()}})
	for _, svc := range []string{"db", "api", "web", "stubborn"} {
		m.await(1, svc+" to start", msg("started", svc))
	}
	if d, a, w := m.index(msg("started", "db")), m.index(msg("started", "api")), m.index(msg("started", "web")); !(d < a && a < w) {
		t.Errorf("got starts at log events db %d, api %d, web %d; want db, then api, then web", d, a, w)
	}
	// The shell ignores TERM once sleep runs in its place.
	if !pollUntil(waitLimit, func() bool { return len(procsWhere(sleeping(stub))) == 1 }) {
		t.Fatalf("stubborn's sleep %s is not running", stub)
	}

	sent := time.Now()
	m.signal(syscall.SIGTERM)
	if exited, status := m.waitExitOr(waitLimit); !exited {
		t.Fatalf("metad has not exited %v after SIGTERM (its --stop-timeout is %v, stubborn's stop_timeout 1s)", waitLimit, global)
	} else if status != 0 {
		t.Errorf("got exit status %d, want 0", status)
	}
	took := time.Since(sent)
	w, a, d := m.index(msg("exited", "web")), m.index(msg("exited", "api")), m.index(msg("exited", "db"))
	if w < 0 || a < 0 || d < 0 || !(w < a && a < d) {
		t.Errorf("got ends at log events web %d, api %d, db %d; want web, then api, then db", w, a, d)
	}
	killed := m.matching(msg("killed", "stubborn"))
	if len(killed) != 1 {
		t.Fatalf("got %d \"killed\" events of stubborn, want 1", len(killed))
	}
	after := eventTime(t, killed[0]).Sub(sent)
	t.Logf("stubborn killed %v after SIGTERM; metad exited after %v", after, took)
	if after < 900*time.Millisecond || after >= global/3 {
		t.Errorf("stubborn was killed %v after SIGTERM, want about its stop_timeout 1s, not metad's %v", after, global)
	}
}

// TestLifecycleParentNotify: started by a service manager with
// NOTIFY_SOCKET (systemd Type=notify), metad sends READY=1 only once
// every service is ready, a STATUS= line, and STOPPING=1 at shutdown;
// its services do not get its NOTIFY_SOCKET.
func TestLifecycleParentNotify(t *testing.T) {
	py := pythonBin(t)
	dir := t.TempDir()
	parent := newParentSocket(t, dir)
	gate := newGate(t, dir, "gate")
	prog := writeProgram(t, dir, "notify.py", notifyScript)
	quick, late := marker(), marker()
	killLeftovers(t, sleeping(quick))
	killLeftovers(t, sleeping(late))
	conf := "quick daemon /bin/sleep " + quick + "\n" +
		"late daemon ready=notify " + py + " " + prog + " " + gate + " " + shq("late but ready") + " ready " + late + "\n"
	m := startMetad(t, runOpts{conf: conf, env: []string{"NOTIFY_SOCKET=" + parent.path}})
	qpid := m.await(1, "quick to start", msg("started", "quick")).int("pid")
	m.await(1, "quick to be ready", stateTo("quick", "ready"))
	lpid := m.await(1, "late to start", msg("started", "late")).int("pid")
	m.await(1, "late to be starting", stateTo("late", "starting"))

	if got, ok := environOf(t, qpid)["NOTIFY_SOCKET"]; ok {
		t.Errorf("quick (ready=started) got NOTIFY_SOCKET=%q, want none (metad's own is %q)", got, parent.path)
	}
	if got := environOf(t, lpid)["NOTIFY_SOCKET"]; got == "" || got == parent.path {
		t.Errorf("late (ready=notify) got NOTIFY_SOCKET=%q, want a socket of metad's own, not metad's %q", got, parent.path)
	}
	if i := parent.index(func(s string) bool { return hasLine(s, "READY=1") }); i >= 0 {
		t.Errorf("metad sent READY=1 while late was starting")
	}

	opened := time.Now()
	openGate(t, gate)
	readyLine := m.await(1, "late to be ready", stateTo("late", "ready"))
	ri, ready := parent.wait("READY=1", func(s string) bool { return hasLine(s, "READY=1") })
	if ready.at.Before(opened) {
		t.Errorf("metad sent READY=1 before late could be ready")
	}
	if at := eventTime(t, readyLine); ready.at.Before(at) {
		t.Errorf("READY=1 arrived at %v, before late's ready line (%v)", ready.at.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
	}
	_, status := parent.wait("STATUS=", func(s string) bool { return hasKey(s, "STATUS") })
	t.Logf("metad's status: %q", status.text)

	m.signal(syscall.SIGTERM)
	si, _ := parent.wait("STOPPING=1", func(s string) bool { return hasLine(s, "STOPPING=1") })
	if si < ri {
		t.Errorf("STOPPING=1 (datagram %d) came before READY=1 (datagram %d)", si, ri)
	}
	if got := m.wait(waitLimit); got != 0 {
		t.Errorf("got exit status %d, want 0", got)
	}
}

// TestLifecycleStatusAndStop: metac status shows the real last exit
// status of a program and the start error of a listener and a stream
// whose port is taken; metac stop of a service that ignores its stop
// signal waits for the kill after its stop_timeout and says so.
func TestLifecycleStatusAndStop(t *testing.T) {
	t.Run("last exit", func(t *testing.T) {
		m := startMetad(t, runOpts{conf: "three daemon backoff=1m /bin/sh -c 'exit 3'\n"})
		m.await(1, "three to exit", msg("exited", "three"))
		c := ctlOf(m)
		if out := c.statusText("three"); !strings.Contains(out, "exit status 3") {
			t.Errorf("metac status three: got\n%s\nwant it to contain %q", out, "exit status 3")
		}
		last, _ := c.statusJSON("three")["last_exit"].(map[string]any)
		if jsonInt(last, "code") != 3 {
			t.Errorf("metac --json status three: got last_exit %v, want code 3", last)
		}
	})

	t.Run("address in use", func(t *testing.T) {
		ports := make([]int, 2)
		for i := range ports {
			l, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			ports[i] = l.Addr().(*net.TCPAddr).Port
		}
		conf := fmt.Sprintf("busyl listener port=%d addr=127.0.0.1 min=1 /bin/cat\n", ports[0]) +
			fmt.Sprintf("busys stream port=%d addr=127.0.0.1 /bin/cat\n", ports[1])
		m := startMetad(t, runOpts{conf: conf})
		c := ctlOf(m)
		for _, svc := range []string{"busyl", "busys"} {
			m.await(1, svc+"'s bind to fail", func(ev event) bool {
				return ev.str("svc") == svc && strings.Contains(ev.str("error"), "address already in use")
			})
			if out := c.statusText(svc); !strings.Contains(out, "address already in use") {
				t.Errorf("metac status %s: got\n%s\nwant it to contain %q", svc, out, "address already in use")
			}
			if got := jsonStr(c.statusJSON(svc), "last_start_error"); !strings.Contains(got, "address already in use") {
				t.Errorf("metac --json status %s: got last_start_error %q, want it to say the address is in use", svc, got)
			}
		}
	})

	t.Run("stop kills after stop_timeout", func(t *testing.T) {
		stub := marker()
		killLeftovers(t, sleeping(stub))
		conf := "stubborn daemon stop_timeout=2s /bin/sh -c " + shq(`trap "" TERM; exec sleep `+stub) + "\n"
		m := startMetad(t, runOpts{conf: conf, args: []string{"--stop-timeout", "30s"}})
		pid := m.await(1, "stubborn to start", msg("started", "stubborn")).int("pid")
		m.await(1, "the control socket", msg("control socket listening"))
		// The shell ignores TERM once sleep runs in its place.
		if !pollUntil(waitLimit, func() bool { return len(procsWhere(sleeping(stub))) == 1 }) {
			t.Fatalf("stubborn's sleep %s is not running", stub)
		}
		asked := time.Now()
		out, status := ctlOf(m).ctlTry(waitLimit, "stop", "stubborn")
		t.Logf("metac stop stubborn returned after %v: status %d, %q", time.Since(asked), status, out)
		if status != 0 || !strings.Contains(out, "stubborn: killed after 2s") {
			t.Errorf("metac stop stubborn: got status %d, output %q; want 0 and %q", status, out, "stubborn: killed after 2s")
		}
		m.await(1, "stubborn's instance to end", exitedPID(pid))
		if n := m.count(msg("killed", "stubborn")); n != 1 {
			t.Errorf("got %d \"killed\" events of stubborn, want 1", n)
		}
	})
}
