package netctl

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"metad/conffmt"
	"metad/supervise"
)

// protocolVersion is the version of Request and Reply. A metad answers a
// request of another version with an error naming the one it speaks.
// Fields are added to a reply within a version: a reader ignores those
// it does not know, and a field it knows that is absent comes from an
// older metad (docs/protocol.md). The version changes only when a field
// changes its meaning or a request changes its form.
const protocolVersion = 1

// Request is one control command, as JSON on the local socket and in a
// request datagram. Make one with NewRequest.
type Request struct {
	Version int      `json:"v"`
	Command string   `json:"cmd"`
	Args    []string `json:"args,omitempty"`
	// GatherMS is how long a relay collects replies, in milliseconds
	// (relayed requests only).
	GatherMS int64 `json:"gather_ms,omitempty"`
	// SpreadMS asks each host to wait a random time up to this many
	// milliseconds before it sends its reply (at most a second), so that
	// the replies of a fleet to a broadcast are spread out.
	SpreadMS int64 `json:"spread_ms,omitempty"`
}

// NewRequest returns the request for cmd with args, in the version of the
// protocol this package speaks. It does not check them: see CheckRequest.
func NewRequest(cmd string, args ...string) Request {
	return Request{Version: protocolVersion, Command: cmd, Args: args}
}

// Reply is metad's answer to a Request.
type Reply struct {
	Version  int       `json:"v"`
	OK       bool      `json:"ok"`
	Error    string    `json:"error,omitempty"` // lines, for reload
	Name     string    `json:"name,omitempty"`  // the answering machine's host name
	Metad    string    `json:"version,omitempty"`
	Services []Service `json:"services,omitempty"`
	Stacks   string    `json:"stacks,omitempty"` // debug stacks: every goroutine's stack
}

// Service is the state of one service, as list reports it.
type Service struct {
	Name      string     `json:"name"`
	Class     string     `json:"class"`
	Enabled   bool       `json:"enabled"`
	State     string     `json:"state"`
	Port      int        `json:"port,omitempty"` // listener and stream
	Instances []Instance `json:"instances"`
	Restarts  int        `json:"restarts"`
	Crashes   int        `json:"crashes"`               // in a row
	NextStart *time.Time `json:"next_start,omitempty"`  // next automatic start, when one is scheduled
	Reason    string     `json:"reason,omitempty"`      // why the service is in its state
	Next      string     `json:"next_reason,omitempty"` // why NextStart: min, period, connection, listen
	Held      int        `json:"held,omitempty"`        // stream: slots held by crashes
	Custody   []int      `json:"custody,omitempty"`     // processes left by ended instances, being stopped
	Starts    int        `json:"starts"`                // instances started
	Exits     int        `json:"exits"`                 // instances that ended
	LastExit  *LastExit  `json:"last_exit,omitempty"`   // how the last instance ended
	Since     *time.Time `json:"since,omitempty"`       // when the service entered its state
	// StartError is the error of the last start that failed, at
	// StartErrorAt; status only.
	StartError   string     `json:"last_start_error,omitempty"`
	StartErrorAt *time.Time `json:"last_start_error_at,omitempty"`
	Output       []string   `json:"output,omitempty"` // status, watch_output: the last lines of output

	// Ready says whether the service is ready (metad(8)); nil from a
	// metad that does not report readiness, whose readers fall back on
	// the state.
	Ready        *bool     `json:"ready,omitempty"`
	NotifyStatus string    `json:"notify_status,omitempty"`         // ready=notify: the last STATUS= text
	ReadyTimeout float64   `json:"ready_timeout_seconds,omitempty"` // how long a start may take to be ready
	StopTimeout  float64   `json:"stop_timeout_seconds,omitempty"`  // grace between the stop signal and SIGKILL
	LastStop     *LastStop `json:"last_stop,omitempty"`             // how the last stop ended; nil before the first
	Health       string    `json:"health,omitempty"`                // unknown, healthy or unhealthy; "" without a check
	HealthError  string    `json:"health_error,omitempty"`          // the last failed check, hang or watchdog expiry
	CheckFails   int       `json:"check_fails,omitempty"`           // consecutive failed checks of the current instance
	Unhealthy    int       `json:"unhealthy,omitempty"`             // instances stopped as unhealthy, hung or watchdog-expired
	Refused      *Refused  `json:"refused,omitempty"`               // stream: connections closed by admission
}

// LastStop is how the last stop of a service's instances ended.
type LastStop struct {
	At     time.Time `json:"at"`           // when the last instance ended
	Took   float64   `json:"took_seconds"` // from the stop signal to that end
	Killed bool      `json:"killed"`       // SIGKILL was needed after the stop timeout
}

// Refused counts the connections a stream service's admission closed,
// by rule.
type Refused struct {
	PerSource int `json:"per_source"`
	Rate      int `json:"rate"`
	OnlyFrom  int `json:"only_from"`
}

// LastExit is how a service's last instance ended.
type LastExit struct {
	Status  string    `json:"status"`      // "exit status 1", "signal 9 (killed)"
	Code    int       `json:"code"`        // as a shell reports it: 128+N for signal N
	At      time.Time `json:"at"`          // when
	Ran     float64   `json:"ran_seconds"` // how long it ran
	Outcome string    `json:"outcome"`     // clean, crashed, failed or peer-gone
}

// Instance is one running process of a service.
type Instance struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
}

// Controller is what control needs of the supervisor; *supervise.Supervisor
// implements it. Errors for names that are not services wrap
// supervise.ErrUnknownService.
type Controller interface {
	List(names ...string) ([]supervise.Status, error)
	Enable(names ...string) error
	Disable(names ...string) error
	Start(name string) error
	Stop(names ...string) error
	Restart(names ...string) error
	Kill(name string, sig syscall.Signal) error
}

// Final is how metad ends when control asks it to: the commands shutdown,
// poweroff, reboot and halt. Only PID 1 of a machine is asked for the last
// three.
type Final uint8

// The ends control can ask for. The zero value is Shutdown.
const (
	// Shutdown stops everything and exits; as PID 1 of a machine, it
	// then powers off, as Poweroff does.
	Shutdown Final = iota
	Poweroff
	Reboot
	Halt
)

// String returns the final's name, as metac spells the command.
func (f Final) String() string {
	switch f {
	case Shutdown:
		return "shutdown"
	case Poweroff:
		return "poweroff"
	case Reboot:
		return "reboot"
	case Halt:
		return "halt"
	default:
		return "final(" + strconv.Itoa(int(f)) + ")"
	}
}

// System is what control needs of metad itself.
type System interface {
	// Reload re-reads the config file; the error lists its problems.
	Reload() error
	// Shutdown starts stopping everything and then ending as f says. It
	// does not wait.
	Shutdown(f Final)
	// CheckReexec checks that metad's binary on disk can take over from
	// the running image; Reexec then has it executed in place of the
	// running image, keeping every instance, socket and state. Reexec does
	// not wait: the reply goes out first.
	CheckReexec() error
	Reexec()
}

// Handler carries out requests. Its methods are safe for concurrent use
// when its Controller and System are.
type Handler struct {
	Controller Controller
	System     System
	Version    string // metad's, for the version command
	Hostname   string // put in every reply
	// Machine says metad is PID 1 of a machine, where poweroff, reboot
	// and halt apply. Elsewhere they are refused; shutdown always works.
	Machine bool
}

// Via says which server a request came through.
type Via uint8

// The servers. Some commands are served on the local socket only.
const (
	ViaLocal Via = iota
	ViaNetwork
)

// command is one entry of the command table, shared by metac (to check
// its arguments) and metad (to carry it out).
type command struct {
	args     string // for usage messages
	what     string // for --help
	min, max int    // number of arguments; max < 0: any
	// check validates the arguments beyond their number.
	check func(args []string) error
	// readOnly commands change nothing: their requests are logged at
	// debug, so that a liveness probe does not fill the log.
	readOnly bool
	// localOnly commands are refused over the network.
	localOnly bool
	// do carries the command out; nil for a plain ok.
	do func(h *Handler, args []string) (Reply, error)
	// then is what happens once the reply is sent, when do succeeded:
	// the reply to shutdown must leave before metad goes down.
	then func(h *Handler)
}

// commands is the command table. It is never written to.
var commands = map[string]command{
	"list":   {args: "[SERVICE...]", what: "state of the services (all by default)", min: 0, max: -1, readOnly: true, do: (*Handler).list},
	"status": {args: "[SERVICE...]", what: "the state of the services with its reason, the last exit and start error, the last output lines", min: 0, max: -1, readOnly: true, do: (*Handler).status},
	"enable": {args: "SERVICE...", what: "let the class rules start instances", min: 1, max: -1, do: func(h *Handler, a []string) (Reply, error) {
		return Reply{}, h.Controller.Enable(a...)
	}},
	"disable": {args: "SERVICE...", what: "start nothing more; instances run on", min: 1, max: -1, do: func(h *Handler, a []string) (Reply, error) {
		return Reply{}, h.Controller.Disable(a...)
	}},
	"start": {args: "SERVICE", what: "start one instance now; metac waits until it is ready", min: 1, max: 1, do: func(h *Handler, a []string) (Reply, error) {
		return Reply{}, h.Controller.Start(a[0])
	}},
	"stop": {args: "SERVICE...", what: "disable, and stop every instance; metac waits until they are gone", min: 1, max: -1, do: func(h *Handler, a []string) (Reply, error) {
		return Reply{}, h.Controller.Stop(a...)
	}},
	"restart": {args: "SERVICE...", what: "stop the instances; the class rules start new ones; metac waits until ready", min: 1, max: -1, do: func(h *Handler, a []string) (Reply, error) {
		return Reply{}, h.Controller.Restart(a...)
	}},
	"kill":   {args: "SERVICE [SIGNAL]", what: "send SIGNAL (default TERM) to every instance", min: 1, max: 2, check: checkKill, do: (*Handler).kill},
	"reload": {what: "re-read the config file", do: func(h *Handler, _ []string) (Reply, error) { return Reply{}, h.System.Reload() }},
	"reexec": {
		what: "execute metad's binary again, keeping every instance and socket",
		do:   func(h *Handler, _ []string) (Reply, error) { return Reply{}, h.System.CheckReexec() },
		then: func(h *Handler) { h.System.Reexec() },
	},
	"version": {what: "metad's version", readOnly: true, do: func(h *Handler, _ []string) (Reply, error) { return Reply{Metad: h.Version}, nil }},
	"debug": {args: "stacks", what: "every goroutine's stack (local socket only)", min: 1, max: 1, check: checkDebug, localOnly: true,
		do: func(*Handler, []string) (Reply, error) { return Reply{Stacks: stacks(maxStacks)}, nil }},
	"shutdown": {what: "stop everything and exit", then: func(h *Handler) { h.System.Shutdown(Shutdown) }},
	"poweroff": finalCommand(Poweroff, "PID 1 of a machine: stop everything and power off"),
	"reboot":   finalCommand(Reboot, "PID 1 of a machine: stop everything and reboot"),
	"halt":     finalCommand(Halt, "PID 1 of a machine: stop everything and halt"),
}

// CommandInfo describes a command, for help and completion.
type CommandInfo struct {
	Name string
	Args string // its arguments, as in a usage line; "" for none
	What string // what it does, in a few words
	// LocalOnly commands are refused over the network.
	LocalOnly bool
}

// Commands returns every command metad carries out, by name.
func Commands() []CommandInfo {
	out := make([]CommandInfo, 0, len(commands))
	for _, n := range commandNames() {
		c := commands[n]
		out = append(out, CommandInfo{Name: n, Args: c.args, What: c.what, LocalOnly: c.localOnly})
	}
	return out
}

// commandNames returns the commands in order, for usage messages.
func commandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ErrUnknownCommand is wrapped by the error of CheckRequest for a command
// that is not in the table.
var ErrUnknownCommand = errors.New("unknown command")

// errLocalOnly refuses a local-only command over the network.
var errLocalOnly = errors.New("served on the local socket only")

// CheckRequest validates a command and its arguments against the table:
// whether metad would carry it out, not whether it would succeed.
func CheckRequest(cmd string, args []string) error {
	c, ok := commands[cmd]
	if !ok {
		return fmt.Errorf("%w %q (commands: %s)", ErrUnknownCommand, cmd, strings.Join(commandNames(), ", "))
	}
	if len(args) < c.min || c.max >= 0 && len(args) > c.max {
		if c.args == "" {
			return fmt.Errorf("%s takes no arguments", cmd)
		}
		return fmt.Errorf("usage: %s %s", cmd, c.args)
	}
	if c.check != nil {
		return c.check(args)
	}
	return nil
}

// Do carries out req, which came through via, and returns the reply, and
// what the caller must do once the reply is sent, or nil. It never fails:
// errors are in the reply. It does not log: the servers do (see answer).
func (h *Handler) Do(req Request, via Via) (Reply, func()) {
	if req.Version != protocolVersion {
		return h.Fail(fmt.Errorf("unsupported request version %d (this metad speaks %d)", req.Version, protocolVersion)), nil
	}
	if err := CheckRequest(req.Command, req.Args); err != nil {
		return h.Fail(err), nil
	}
	c := commands[req.Command]
	if c.localOnly && via != ViaLocal {
		return h.Fail(fmt.Errorf("cannot %s over the network: %w", req.Command, errLocalOnly)), nil
	}
	var r Reply
	if c.do != nil {
		var err error
		if r, err = c.do(h, req.Args); err != nil {
			return h.Fail(err), nil
		}
	}
	r.Version, r.Name, r.OK = protocolVersion, h.Hostname, true
	if c.then == nil {
		return r, nil
	}
	return r, func() { c.then(h) }
}

// answer carries out req as Do does, and logs it on log, which names the
// peer: read-only requests at debug, others at info, and a request that
// failed, with its error, at warn.
func (h *Handler) answer(log zerolog.Logger, req Request, via Via) (Reply, func()) {
	ev := log.Info()
	if commands[req.Command].readOnly {
		ev = log.Debug()
	}
	ev.Str("cmd", req.Command).Strs("args", req.Args).Msg("control request")
	reply, then := h.Do(req, via)
	if !reply.OK {
		log.Warn().Str("cmd", req.Command).Strs("args", req.Args).Str("error", reply.Error).Msg("control request failed")
	}
	return reply, then
}

// Fail returns the reply that reports err.
func (h *Handler) Fail(err error) Reply {
	return Reply{Version: protocolVersion, Name: h.Hostname, Error: err.Error()}
}

func (h *Handler) list(names []string) (Reply, error) {
	st, err := h.Controller.List(names...)
	if err != nil {
		return Reply{}, err
	}
	svcs := make([]Service, 0, len(st))
	for _, s := range st {
		svcs = append(svcs, serviceOf(s))
	}
	return Reply{Services: svcs}, nil
}

// status is list with every detail: the last start error, the last
// lines of output and the timeouts too (what metac's waits are bounded
// by), which list leaves out to keep the listing of many services short.
func (h *Handler) status(names []string) (Reply, error) {
	st, err := h.Controller.List(names...)
	if err != nil {
		return Reply{}, err
	}
	svcs := make([]Service, 0, len(st))
	for _, s := range st {
		svcs = append(svcs, detailsOf(s))
	}
	return Reply{Services: svcs}, nil
}

// detailsOf is serviceOf with what status adds.
func detailsOf(s supervise.Status) Service {
	svc := serviceOf(s)
	svc.StartError, svc.Output = s.StartError, s.Output
	svc.ReadyTimeout, svc.StopTimeout = s.ReadyTimeout.Seconds(), s.StopTimeout.Seconds()
	if !s.StartErrorAt.IsZero() {
		at := s.StartErrorAt
		svc.StartErrorAt = &at
	}
	return svc
}

// serviceOf converts the supervisor's snapshot for the wire.
func serviceOf(s supervise.Status) Service {
	out := Service{
		Name:      s.Name,
		Class:     s.Class.String(),
		Enabled:   s.Enabled,
		State:     s.State,
		Port:      s.Port,
		Instances: make([]Instance, 0, len(s.Instances)),
		Restarts:  s.Restarts,
		Crashes:   s.Crashes,
		Reason:    s.Reason,
		Next:      s.NextReason,
		Held:      s.Held,
		Custody:   s.Custody,
		Starts:    s.Starts,
		Exits:     s.Exits,

		NotifyStatus: s.Notify,
		Health:       s.Health,
		HealthError:  s.HealthError,
		CheckFails:   s.CheckFails,
		Unhealthy:    s.Unhealthy,
	}
	ready := s.Ready
	out.Ready = &ready
	if l := s.LastStop; l != nil {
		out.LastStop = &LastStop{At: l.At, Took: l.Took.Seconds(), Killed: l.Killed}
	}
	if s.Class == conffmt.Stream {
		out.Refused = &Refused{PerSource: s.Refused.PerSource, Rate: s.Refused.Rate, OnlyFrom: s.Refused.OnlyFrom}
	}
	if !s.Since.IsZero() {
		since := s.Since
		out.Since = &since
	}
	if e := s.LastExit; e != nil {
		out.LastExit = &LastExit{Status: e.Status, Code: e.Code, At: e.At, Ran: e.Ran.Seconds(), Outcome: e.Outcome}
	}
	for _, in := range s.Instances {
		out.Instances = append(out.Instances, Instance{PID: in.PID, Started: in.Started})
	}
	if !s.NextStart.IsZero() {
		next := s.NextStart
		out.NextStart = &next
	}
	return out
}

func (h *Handler) kill(args []string) (Reply, error) {
	sig := syscall.SIGTERM
	if len(args) == 2 {
		var err error
		if sig, err = conffmt.ParseSignal(args[1]); err != nil {
			return Reply{}, err
		}
	}
	return Reply{}, h.Controller.Kill(args[0], sig)
}

func checkKill(args []string) error {
	if len(args) == 2 {
		_, err := conffmt.ParseSignal(args[1])
		return err
	}
	return nil
}

// errNotMachine refuses poweroff, reboot and halt where they do not apply.
var errNotMachine = errors.New("metad is not PID 1 of a machine: use shutdown")

// finalCommand is poweroff, reboot or halt: refused unless metad is PID 1
// of a machine.
func finalCommand(f Final, what string) command {
	return command{
		what: what,
		do: func(h *Handler, _ []string) (Reply, error) {
			if !h.Machine {
				return Reply{}, fmt.Errorf("cannot %s: %w", f, errNotMachine)
			}
			return Reply{}, nil
		},
		then: func(h *Handler) { h.System.Shutdown(f) },
	}
}
