package daemon

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"metad/supervise/notify"
)

// The sd_notify client side (SPEC §8, last point): when metad was started
// with NOTIFY_SOCKET (systemd Type=notify, podman run
// --sdnotify=container), it says READY=1 once every enabled service is
// ready or done — in command mode once the command is started too —,
// STATUS= with the counts as they change, and STOPPING=1 at shutdown. It
// keeps the variable for itself: neither services nor the command get
// it.

// notifyVar is the environment variable of the sd_notify protocol.
const notifyVar = "NOTIFY_SOCKET"

// parentSocket returns the NOTIFY_SOCKET metad was started with, "" if
// none.
func parentSocket() string { return os.Getenv(notifyVar) }

// ChildEnv returns env without NOTIFY_SOCKET: what services and the
// command are given.
func ChildEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, notifyVar+"=") })
}

// parent is metad's notifier of its own parent; the loop owns it.
type parent struct {
	addr   string // "" when metad has no NOTIFY_SOCKET: nothing is sent
	ready  bool   // READY=1 sent
	status string // the last STATUS= sent
}

// readyText returns the STATUS= text for the counts.
func readyText(enabled, ready, failed int) string {
	s := fmt.Sprintf("%d of %d services ready", ready, enabled)
	if failed > 0 {
		s += fmt.Sprintf(", %d failed", failed)
	}
	return s
}

// update says READY=1 once everything is ready, and the counts when they
// changed. started is false in command mode until the command runs.
func (d *Daemon) notifyParent(started bool) {
	p := &d.parent
	if p.addr == "" {
		return
	}
	enabled, ready, failed := d.cfg.Supervisor.Readiness()
	status := readyText(enabled, ready, failed)
	var lines []string
	if !p.ready && started && ready == enabled {
		p.ready = true
		lines = append(lines, "READY=1")
	}
	if status != p.status {
		p.status = status
		lines = append(lines, "STATUS="+status)
	}
	d.sendParent(lines...)
}

// sendParent sends one datagram of lines to the parent, logging failures.
func (d *Daemon) sendParent(lines ...string) {
	if d.parent.addr == "" || len(lines) == 0 {
		return
	}
	if err := notify.Send(d.parent.addr, strings.Join(lines, "\n")); err != nil {
		d.log.Warn().Err(err).Msg("cannot notify the parent")
		return
	}
	d.log.Debug().Strs("lines", lines).Msg("notified the parent")
}
