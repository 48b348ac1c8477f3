package daemon

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"metad/init"
	"metad/supervise"
)

func TestPhases(t *testing.T) {
	tests := []struct {
		from, to Phase
		ok       bool
	}{
		{Starting, Serving, true},
		{Starting, Stopped, true},
		{Starting, Stopping, false},
		{Serving, Reexecuting, true},
		{Serving, Stopping, true},
		{Serving, Stopped, false},
		{Reexecuting, Serving, true},
		{Reexecuting, Stopping, false},
		{Stopping, Stopped, true},
		{Stopping, Serving, false},
		{Stopped, Starting, false},
	}
	for _, tt := range tests {
		if got := tt.from.next(tt.to); got != tt.ok {
			t.Errorf("%v -> %v: got %v, want %v", tt.from, tt.to, got, tt.ok)
		}
	}
	if got := Phase(9).String(); got != "phase(9)" {
		t.Errorf("got %q, want phase(9)", got)
	}
}

// TestConfigModeSignals: TERM and INT shut down (INT means reboot for a
// machine), HUP reloads, others are ignored; each phase change is logged.
func TestConfigModeSignals(t *testing.T) {
	for _, tt := range []struct {
		sig   syscall.Signal
		final initsys.Final
	}{{syscall.SIGTERM, initsys.Poweroff}, {syscall.SIGINT, initsys.Reboot}, {syscall.SIGPWR, initsys.Poweroff}} {
		synctest.Test(t, func(t *testing.T) {
			r := newRig(t)
			r.run()
			synctest.Wait()
			if p := r.d.Phase(); p != Serving {
				t.Fatalf("got phase %v, want serving", p)
			}
			r.sigs <- syscall.SIGUSR1
			r.sigs <- syscall.SIGHUP
			synctest.Wait()
			if !r.sup.has("reload") {
				t.Errorf("SIGHUP: got calls %v, want a reload", r.sup.called())
			}
			r.sigs <- tt.sig
			status, final := r.wait(t)
			if status != 0 || final != tt.final {
				t.Errorf("%v: got status %d, final %v; want 0, %v", tt.sig, status, final, tt.final)
			}
			if ev := r.log.events("shutting down"); len(ev) != 1 || ev[0]["signal"] != tt.sig.String() || ev[0]["phase"] != "stopping" {
				t.Errorf("%v: got %v, want one \"shutting down\" with the signal", tt.sig, ev)
			}
			if ev := r.log.events("ignored signal"); len(ev) != 1 {
				t.Errorf("SIGUSR1: got %v, want one \"ignored signal\"", ev)
			}
			for _, msg := range []string{"metad started", "shutting down", "metad stopped"} {
				if len(r.log.events(msg)) != 1 {
					t.Errorf("got no %q phase change; log:\n%s", msg, r.log)
				}
			}
			if len(r.forwarded()) != 0 {
				t.Errorf("config mode: forwarded %v, want nothing", r.forwarded())
			}
		})
	}
}

// forwarded returns the signals forwarded to the command.
func (r *rig) forwarded() []string {
	var out []string
	for _, c := range r.sup.called() {
		if sig, ok := strings.CutPrefix(c, "forward "); ok {
			out = append(out, sig)
		}
	}
	return out
}

// TestCommandModeSignals: every signal goes to the command, HUP and TERM
// included; metad exits with the command's status when it ends.
func TestCommandModeSignals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, "/bin/sh", "-c", "exit 3")
		r.run()
		synctest.Wait()
		for _, s := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1} {
			r.sigs <- s
		}
		synctest.Wait()
		want := []string{"hangup", "terminated", "interrupt", "user defined signal 1"}
		if got := r.forwarded(); !slices.Equal(got, want) {
			t.Errorf("got %v forwarded, want %v", got, want)
		}
		if r.sup.has("reload") || r.sup.has("shutdown") {
			t.Errorf("got calls %v, want neither reload nor shutdown before the command ends", r.sup.called())
		}
		r.procs.exit(3)
		if status, _ := r.wait(t); status != 3 {
			t.Errorf("got status %d, want the command's 3", status)
		}
		if ev := r.log.events("command exited"); len(ev) != 1 || ev[0]["phase"] != "stopping" {
			t.Errorf("got %v, want one \"command exited\" phase change", ev)
		}
	})
}

// TestShutdownStopsCommand: a shutdown asked by control in command mode
// stops the command too: TERM, then KILL after the stop timeout.
func TestShutdownStopsCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, "/bin/sh")
		r.run()
		synctest.Wait()
		r.d.Shutdown(initsys.Poweroff)
		synctest.Wait()
		if got := r.forwarded(); !slices.Equal(got, []string{"terminated"}) {
			t.Errorf("got %v, want terminated", got)
		}
		time.Sleep(r.d.cfg.StopTimeout)
		synctest.Wait()
		if got := r.forwarded(); !slices.Equal(got, []string{"terminated", "killed"}) {
			t.Errorf("after the stop timeout: got %v, want terminated, killed", got)
		}
		r.procs.exit(137)
		if status, _ := r.wait(t); status != 0 {
			t.Errorf("got status %d, want 0", status)
		}
	})
}

// TestReloadErrorLogged: a reload that fails, asked by control or by
// SIGHUP, is logged with every line of the error.
func TestReloadErrorLogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.run()
		synctest.Wait()
		r.badConf = true
		if err := r.d.Reload(); err == nil {
			t.Error("got no error, want the config's")
		}
		if ev := r.log.events("config not reloaded"); len(ev) != 1 || ev[0]["level"] != "error" {
			t.Errorf("after a failed reload by control: got %v, want one error", ev)
		}
		if ev := r.log.events("open /etc/metad.conf"); len(ev) != 1 {
			t.Errorf("got %v, want the error's line logged", ev)
		}
		r.sigs <- syscall.SIGHUP
		synctest.Wait()
		if ev := r.log.events("config not reloaded"); len(ev) != 2 {
			t.Errorf("after a failed reload by SIGHUP: got %v, want a second error", ev)
		}
		if r.sup.has("reload") {
			t.Error("the supervisor reloaded a config with errors")
		}
		r.sigs <- syscall.SIGTERM
		r.wait(t)
	})
}

// TestShutdownBounded: a supervisor that never returns, or control that
// does not close, does not keep metad: it exits at the stop timeout plus
// the slack at the latest, and says what was stuck.
func TestShutdownBounded(t *testing.T) {
	for _, tt := range []struct {
		name  string
		stick func(r *rig, stuck <-chan struct{})
		msg   string // of the error logged
		want  string // in it or in its error
	}{
		{"supervisor stuck", func(r *rig, stuck <-chan struct{}) {
			r.sup.shutdown = func(context.Context) error { <-stuck; return nil }
		}, "cannot stop every service in time", "the supervisor did not return"},
		{"service stuck", func(r *rig, _ <-chan struct{}) {
			r.sup.shutdown = func(ctx context.Context) error {
				<-ctx.Done()
				return errors.New(`cannot stop service "wedged": no answer`)
			}
		}, "cannot stop every service in time", `"wedged"`},
		{"control stuck", func(r *rig, stuck <-chan struct{}) { r.closing = func() { <-stuck } },
			"cannot close control in time", "control"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t)
				stuck := make(chan struct{})
				defer close(stuck) // let the bubble end
				tt.stick(r, stuck)
				r.run()
				synctest.Wait()
				began := time.Now()
				r.sigs <- syscall.SIGTERM
				r.wait(t)
				if took, bound := time.Since(began), r.d.cfg.StopTimeout+shutdownSlack; took > bound {
					t.Errorf("took %v, want at most %v", took, bound)
				}
				ev := r.log.events(tt.msg)
				if len(ev) != 1 || ev[0]["level"] != "error" {
					t.Fatalf("got %v, want one error %q; log:\n%s", ev, tt.msg, r.log)
				}
				said, _ := ev[0]["error"].(string)
				if said = ev[0]["message"].(string) + ": " + said; !strings.Contains(said, tt.want) {
					t.Errorf("got %q, want it to say %q", said, tt.want)
				}
				if len(r.log.events("metad stopped")) != 1 {
					t.Errorf("got no \"metad stopped\"; log:\n%s", r.log)
				}
			})
		})
	}
}

// TestStoppingRefusesStarts: once the shutdown has begun, control is
// quiesced before the supervisor is told, and then nothing that would
// start something is served; list, stop, disable and kill still are.
func TestStoppingRefusesStarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		release := make(chan struct{})
		r.sup.shutdown = func(ctx context.Context) error { <-release; return nil }
		r.run()
		synctest.Wait()
		c := r.d.Controller()
		r.sigs <- syscall.SIGTERM
		synctest.Wait()
		calls := r.sup.called()
		q, s := slices.Index(calls, "quiesce local"), slices.Index(calls, "shutdown")
		if q < 0 || s < 0 || q > s || !slices.Contains(calls, "quiesce network") {
			t.Errorf("got calls %v, want both servers quiesced before shutdown", calls)
		}
		if r.local.resumed != 1 || r.network.resumed != 1 {
			t.Errorf("got resumed %d, %d; want control answering again (read-only)", r.local.resumed, r.network.resumed)
		}
		for name, err := range map[string]error{
			"start": c.Start("web"), "enable": c.Enable("web"), "restart": c.Restart("web"),
			"reload": r.d.Reload(), "reexec": r.d.CheckReexec(),
		} {
			if !errors.Is(err, ErrStopping) {
				t.Errorf("%s while stopping: got %v, want ErrStopping", name, err)
			}
		}
		for name, err := range map[string]error{"stop": c.Stop("web"), "disable": c.Disable("web"), "kill": c.Kill("web", syscall.SIGKILL)} {
			if err != nil {
				t.Errorf("%s while stopping: got %v, want it served", name, err)
			}
		}
		if _, err := c.List(); err != nil {
			t.Errorf("list while stopping: %v", err)
		}
		for _, call := range []string{"start", "enable", "restart", "reload"} {
			if r.sup.has(call) {
				t.Errorf("the supervisor was asked to %s while stopping", call)
			}
		}
		close(release)
		r.wait(t)
		if got := r.sup.called(); got[len(got)-1] != "close control" {
			t.Errorf("got calls %v, want control closed last", got)
		}
	})
}

// TestReexecRefused: a binary that cannot take over is refused with the
// reason, logged, and nothing changes.
func TestReexecRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.run()
		synctest.Wait()
		for _, check := range []func(string) (Answer, error){
			func(string) (Answer, error) { return Answer{}, errors.New("its check run ended with exit status 3") },
			func(string) (Answer, error) { return parseAnswer("metad-state 999\n") },
		} {
			r.d.check = check
			err := r.d.CheckReexec()
			if err == nil || !strings.Contains(err.Error(), "cannot re-execute") {
				t.Errorf("got %v, want cannot re-execute and the reason", err)
			}
		}
		if ev := r.log.events("re-exec refused"); len(ev) != 2 || ev[0]["level"] != "warn" {
			t.Errorf("got %v, want two warnings", ev)
		}
		if r.sup.has("handover") || r.d.Phase() != Serving {
			t.Errorf("got calls %v in phase %v, want nothing handed over", r.sup.called(), r.d.Phase())
		}
		r.sigs <- syscall.SIGTERM
		r.wait(t)
	})
}

// TestReexecFailsUndone: when the exec fails, the services, the reaper and
// control carry on as before; the state it was given is complete.
func TestReexecFailsUndone(t *testing.T) {
	for _, tt := range []struct {
		answer  string
		version int
		network bool
	}{
		{answer(), Version, true},
		{"metad-state 1\ntakes network\n", 1, true}, // metad 9739c5e
		{"metad-state 1\n", 1, false},               // before network control was handed over
	} {
		synctest.Test(t, func(t *testing.T) {
			r := newRig(t, "/bin/sh")
			r.run()
			synctest.Wait()
			r.d.check = func(string) (Answer, error) { return parseAnswer(tt.answer) }
			err := r.d.CheckReexec()
			if tt.version == 1 && supervise.StateVersion != 1 {
				// A binary that reads version 1 only cannot take this
				// image's service records: refused, with the reason.
				if err == nil {
					t.Errorf("%q: got no error, want a refusal", tt.answer)
				}
				r.procs.exit(0)
				r.wait(t)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var h *Handover
			r.d.exec = func(path string, argv, env []string) error {
				if r.d.Phase() != Reexecuting || r.procs.paused != 1 {
					t.Errorf("exec in phase %v with the reaper paused %d times, want reexecuting and 1", r.d.Phase(), r.procs.paused)
				}
				var err error
				for _, kv := range env {
					if v, ok := strings.CutPrefix(kv, envStateFD+"="); ok {
						h, err = readState(v)
					}
				}
				if h == nil {
					t.Errorf("got %v, %v; want the state in %s", h, err, envStateFD)
				}
				return syscall.ENOENT
			}
			r.d.Reexec()
			synctest.Wait()
			if p := r.d.Phase(); p != Serving {
				t.Errorf("got phase %v, want serving again", p)
			}
			if ev := r.log.events("cannot re-execute"); len(ev) != 1 || ev[0]["level"] != "error" {
				t.Errorf("got %v, want one error", ev)
			}
			if r.sup.resumed != 1 || r.procs.paused != 0 || r.local.resumed != 1 || r.network.resumed != 1 {
				t.Errorf("got services resumed %d, reaper paused %d, control resumed %d, %d; want everything resumed once",
					r.sup.resumed, r.procs.paused, r.local.resumed, r.network.resumed)
			}
			if h == nil {
				return
			}
			if h.Version != tt.version || h.Command != commandPID || (h.fd(fdNetwork) >= 0) != tt.network || h.fd(fdControl) < 0 {
				t.Errorf("got version %d, command %d, descriptors %v; want version %d, command %d, network %v",
					h.Version, h.Command, h.FDs, tt.version, commandPID, tt.network)
			}
			if h.fd("web/socket") < 0 {
				t.Errorf("got descriptors %v, want the service's socket named", h.FDs)
			}
			r.procs.exit(0)
			r.wait(t)
		})
	}
}

// TestShutdownBeforeReexec: a shutdown asked while a re-exec was waiting
// for control to quiesce is not lost in the exec: it comes first.
func TestShutdownBeforeReexec(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.run()
		synctest.Wait()
		r.d.check = func(string) (Answer, error) { return parseAnswer(answer()) }
		if err := r.d.CheckReexec(); err != nil {
			t.Fatal(err)
		}
		r.local.quiescing = func() { r.d.Shutdown(initsys.Halt) }
		r.d.Reexec()
		if _, final := r.wait(t); final != initsys.Halt {
			t.Errorf("got final %v, want halt", final)
		}
		if r.sup.has("handover") {
			t.Errorf("got calls %v, want no hand-over", r.sup.called())
		}
	})
}

// TestRefuseToRunTwice: with a live metad on the control socket, metad
// exits 1 and starts nothing; a socket nobody answers is no obstacle.
func TestRefuseToRunTwice(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "metad.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t)
	r.d.cfg.Socket = sock
	r.run()
	select {
	case res := <-r.result:
		if res[0] != 1 {
			t.Errorf("got status %d, want 1", res[0])
		}
	case <-time.After(10 * time.Second): // a deadline: Run returns at once or never
		r.sigs <- syscall.SIGTERM
		r.wait(t)
		t.Error("metad started beside a live one")
	}
	if calls := r.sup.called(); len(calls) != 0 {
		t.Errorf("got calls %v, want nothing started", calls)
	}
	ev := r.log.events("cannot start control")
	if len(ev) != 1 || !strings.Contains(ev[0]["error"].(string), "another metad is listening") {
		t.Errorf("got %v, want the reason", ev)
	}
	if len(r.log.events("metad not started")) != 1 {
		t.Errorf("got no \"metad not started\"; log:\n%s", r.log)
	}

	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // what a killed metad leaves
	r = newRig(t)
	r.d.cfg.Socket = sock
	r.run()
	r.sigs <- syscall.SIGTERM
	if status, _ := r.wait(t); status != 0 || !r.sup.has("control") || !r.sup.has("load") {
		t.Errorf("stale socket: got status %d, calls %v; want 0, control and services started", status, r.sup.called())
	}
}

// TestStartFails: a config with an error starts nothing and closes
// control again; metad exits 1.
func TestStartFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.badConf = true
		r.run()
		if status, _ := r.wait(t); status != 1 {
			t.Errorf("got status %d, want 1", status)
		}
		if got := r.sup.called(); !slices.Equal(got, []string{"control", "read /etc/metad.conf", "close control"}) {
			t.Errorf("got calls %v, want control opened and closed, nothing loaded", got)
		}
		if ev := r.log.events("metad not started"); len(ev) != 1 || ev[0]["phase"] != "stopped" {
			t.Errorf("got %v, want one \"metad not started\"", ev)
		}
	})
}

// TestTakeOver: after a re-exec metad takes the control sockets and the
// command handed over, and does not refuse to start on a socket that
// answers: it is its own.
func TestTakeOver(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "metad.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	synctest.Test(t, func(t *testing.T) { takeOver(t, sock) })
}

func takeOver(t *testing.T, sock string) {
	r := newRig(t, "/bin/sh")
	r.d.cfg.Socket = sock
	r.d.cfg.Handed = &Handover{Version: 1, Command: commandPID, FDs: []NamedFD{{fdControl, 7}, {fdNetwork, 8}},
		Services: &supervise.State{Version: 1}}
	var got ControlFDs
	control := r.d.cfg.Control
	r.d.cfg.Control = func(d *Daemon, fds ControlFDs) (Control, error) {
		got = fds
		return control(d, fds)
	}
	r.run()
	synctest.Wait()
	r.procs.exit(5) // the command ends: metad exits with its status
	if status, _ := r.wait(t); status != 5 {
		t.Errorf("got status %d, want the command's 5", status)
	}
	if got != (ControlFDs{7, 8}) || !r.sup.has("restore") || r.sup.has("load") || r.sup.has("read /etc/metad.conf") {
		t.Errorf("got control %v, calls %v; want 7, 8 and the services restored, no config read", got, r.sup.called())
	}
	if ev := r.log.events("took over from the previous metad"); len(ev) != 1 || ev[0]["state_version"] != 1.0 {
		t.Errorf("got %v, want one \"took over\" of state version 1", ev)
	}
}
