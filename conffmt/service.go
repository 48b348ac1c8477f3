// Package conffmt turns metad.conf text into validated, fully defaulted
// services, and prints services back as canonical config text.
//
// It owns the config language: word splitting, comments, continuation
// lines, classes, options, their defaults and their checks, and the
// FILE:LINE:COL errors an administrator sees. It does not start, watch or
// signal anything, and it imports no other package of metad. Host lookups
// (users, programs, port names) go through a Resolver so that they can be
// replaced in tests.
package conffmt

import (
	"io/fs"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// Class is the kind of a service: how and when its instances are started.
type Class uint8

// The three classes of the original metad.
const (
	Daemon   Class = iota + 1 // kept running: min, max, period
	Listener                  // one process handed the listening socket as fd 3
	Stream                    // one process per accepted connection
)

// String returns the class as it is spelled in the config file.
func (c Class) String() string {
	switch c {
	case Daemon:
		return "daemon"
	case Listener:
		return "listener"
	case Stream:
		return "stream"
	default:
		return "class(" + strconv.Itoa(int(c)) + ")"
	}
}

// Pos is a position in a config file; Line and Col count from 1, Col in
// bytes.
type Pos struct {
	Line, Col int
}

// Credential is a resolved user=USER[:GROUP] option. User and Group keep
// the text as written, for printing; the numbers are what a child runs as.
type Credential struct {
	User   string   // as written: a name or a number
	Group  string   // as written; "" when the user's primary group applies
	UID    uint32   // resolved user id
	GID    uint32   // resolved primary group id, or GROUP's
	Groups []uint32 // the groups to set with setgroups(2): the user's, primary first; nil when Group is set or the user has no passwd entry
}

// Service is one line of a config file, checked and with every default
// filled in. The zero value is not a valid service; Parse is the only
// intended producer. Fields that do not apply to the class are zero.
type Service struct {
	Name  string
	Class Class
	Pos   Pos // where the service's name stands in its file

	Min     int            // daemon: instances kept running; listener: 1 starts it at once, 0 on the first connection
	Max     int            // most instances at once, held backoff slots included; a listener's is 1
	Period  time.Duration  // daemon: start one every Period while fewer than Max run; 0 means never
	Dir     string         // working directory, absolute
	User    *Credential    // nil: metad's own user and groups
	Pidfile string         // daemon, absolute: the program daemonizes and writes its real pid here; Max is then 1
	Watch   bool           // watch_output: log the program's stdout and stderr line by line
	Enabled bool           // initial state
	Env     []string       // NAME=VALUE pairs added to metad's environment, in file order; a later NAME wins
	Crash   time.Duration  // a failed run shorter than this is a crash; more than 0
	Backoff time.Duration  // ceiling of the exponential backoff; more than 0
	Stop    syscall.Signal // signal that stops an instance; never a job-control signal
	Argv0   string         // argv[0] given to the program

	// EnvFiles are read at each start, in order, after Env: a NAME they
	// set overrides Env's and metad's (see ReadEnvFiles).
	EnvFiles []EnvFile
	Umask    *fs.FileMode // the program's file mode creation mask, 0 to 0777; nil: metad's
	Nice     *int         // the program's nice value, -20 to 19; nil: metad's
	Limits   []Limit      // resource limits, at most one per resource, in the order of the limits table (nofile first); the others are metad's

	// Lifecycle (SPEC §8).
	Ready        Ready         // how readiness is known; the zero value is ready=started
	ReadyTimeout time.Duration // not ready within this: the instance is stopped, the run is a crash; default 90s
	After        []string      // services that must be ready or done before an automatic start; stopped after this one at shutdown
	Needs        []string      // as After (each is in After too), and this one is stopped while one of them is not up
	Restart      Restart       // daemon: when an ended instance is replaced
	Retries      int           // crashes in a row after which the service is failed; 0: no limit
	OnFailure    Action        // what metad does when the service becomes failed
	OnSuccess    Action        // what metad does when the service becomes done
	StopTimeout  time.Duration // grace between the stop signal and SIGKILL; 0: metad's --stop-timeout

	// Health and hang detection (SPEC §10).
	Check        Probe         // liveness check while ready; Kind ProbeNone: none
	CheckEvery   time.Duration // default 10s
	CheckTimeout time.Duration // default 5s
	CheckFails   int           // consecutive failed checks that make an instance unhealthy; default 3
	Watchdog     time.Duration // ready=notify: WATCHDOG=1 expected within every Watchdog; 0: none
	Quiet        time.Duration // watch_output: no output line for Quiet is a hang; 0: none

	// Stream admission (SPEC §11).
	PerSource int            // most instances at once for one client address; 0: no limit
	Rate      Rate           // connections accepted per client address; zero: no limit
	OnlyFrom  []netip.Prefix // client addresses served (masked, IPv4 as IPv4); nil: every address

	Port    int        // listener, stream: TCP port, 1 to 65535
	Addr    netip.Addr // listener, stream: the zero Addr means every address, IPv4 and IPv6
	Backlog int        // listener, stream: listen(2) backlog

	Program string   // as written in the file
	Path    string   // Program resolved: an absolute path
	Args    []string // arguments after the program, not including argv[0]
}

// Argv returns the argument vector the program is started with.
func (s *Service) Argv() []string {
	argv := make([]string, 0, 1+len(s.Args))
	argv = append(argv, s.Argv0)
	return append(argv, s.Args...)
}

// Unlimited is the value of a Limit without a limit, written infinity or
// unlimited (RLIM_INFINITY).
const Unlimited = ^uint64(0)

// Limit is one limit=NAME=SOFT[:HARD] option: a resource limit that the
// program starts with, as setrlimit(2) takes it.
type Limit struct {
	Resource int    // unix.RLIMIT_NOFILE, unix.RLIMIT_CORE...
	Soft     uint64 // the soft limit, at most Hard; Unlimited for none
	Hard     uint64 // the hard limit; Unlimited for none
}

// Name returns the resource's name in the config language: "nofile",
// "core"...; or "rlimit(N)" for a resource it has no name for.
func (l Limit) Name() string {
	if r := resourceOf(l.Resource); r != nil {
		return r.name
	}
	return "rlimit(" + strconv.Itoa(l.Resource) + ")"
}

// EnvFile is one env_file=PATH option: a file of NAME=VALUE lines read
// at each start of the program (see ParseEnvFile for its syntax).
type EnvFile struct {
	Path     string // absolute
	Optional bool   // written env_file=-PATH: a file that does not exist is skipped
}

// ReadyKind is how metad learns that a started instance is ready.
type ReadyKind uint8

// The forms of ready= (SPEC §8).
const (
	ReadyStarted ReadyKind = iota // ready=started: as soon as it is started (the default)
	ReadyNotify                   // ready=notify: sd_notify READY=1 on the service's NOTIFY_SOCKET
	ReadyFD                       // ready=fd:N: a line written to fd N (s6 notification fd)
	ReadyTCP                      // ready=tcp:[ADDR:]PORT: a TCP connection succeeds
	ReadyExec                     // ready=exec:COMMAND: COMMAND exits 0, tried every 200ms
)

// Ready is a ready= option.
type Ready struct {
	Kind  ReadyKind
	FD    int   // ReadyFD: the descriptor the program writes to, 3 or more
	Probe Probe // ReadyTCP, ReadyExec: what is tried until it succeeds
}

// ProbeKind is the kind of a probe: a test of a service from outside.
type ProbeKind uint8

// The probes of ready= and check=.
const (
	ProbeNone ProbeKind = iota
	ProbeTCP            // a TCP connection to Addr succeeds
	ProbeHTTP           // a GET of URL answers 2xx or 3xx (redirects not followed)
	ProbeExec           // Argv exits 0
)

// Probe is a test run against a service: tcp:[ADDR:]PORT, http://... or
// exec:COMMAND.
type Probe struct {
	Kind ProbeKind
	Addr netip.AddrPort // ProbeTCP: ADDR defaults to 127.0.0.1
	URL  string         // ProbeHTTP: the whole URL, http:// or https://
	Argv []string       // ProbeExec: COMMAND split like a config line; Argv[0] as written
	Text string         // the option's value as written, for messages and printing
}

// Restart is a daemon's restart= policy.
type Restart uint8

// The restart policies; the zero value is RestartAlways.
const (
	RestartAlways    Restart = iota // start another whenever an instance ends
	RestartOnFailure                // only after a failure; a clean end makes the service done
	RestartNever                    // never: the service is done or failed when its instance ends
)

// Action is what metad does when a service ends for good (on_failure=,
// on_success=).
type Action uint8

// The actions; the zero value is ActionNone.
const (
	ActionNone     Action = iota // nothing
	ActionShutdown               // metad shuts down (on_failure: with the service's last exit status)
)

// Rate is a rate=N/DUR option: at most N connections per Per from one
// client address, as a token bucket of N tokens refilled over Per.
type Rate struct {
	N   int
	Per time.Duration
}

// Deps returns the services this one starts after: After, which holds
// Needs too.
func (s *Service) Deps() []string { return s.After }
