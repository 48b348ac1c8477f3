package daemon

import (
	"context"
	"os"

	"github.com/rs/zerolog"

	"metad/conffmt"
	"metad/init"
	"metad/supervise"
)

// defaultPath is the PATH metad uses when it has none: the kernel starts
// PID 1 without one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Main runs metad as a daemon in this process: it takes what a previous
// image handed over, sets the process up (signals, reaper, subreaper; as
// PID 1 of a machine, the essential mounts), runs a Daemon, and at the
// end, as PID 1, ends every other process. It returns metad's exit
// status; as PID 1 of a machine it never returns. control makes the
// control servers (see Config.Control).
func Main(o Options, log zerolog.Logger, control func(*Daemon, ControlFDs) (Control, error)) int {
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", defaultPath)
	}
	// Take the state and the sockets handed to metad, then let no other
	// inherited descriptor reach a child.
	handed, err := Take()
	if err != nil {
		log.Error().Err(err).Msg("cannot take over from the previous metad: starting afresh")
	}
	inherited, err := supervise.InheritListeners()
	if err != nil {
		log.Warn().Err(err).Msg("cannot use every inherited socket")
	}
	if err := initsys.CloseOnExecAll(); err != nil {
		log.Warn().Err(err).Msg("cannot mark inherited descriptors close-on-exec")
	}
	// Signals first: Go's default for TERM, INT and HUP is to exit, and
	// the control socket, once it exists, invites a quick SIGTERM.
	sigs := make(chan os.Signal, 64)
	initsys.Notify(sigs)
	reaper := initsys.NewReaper(log)

	pid1 := os.Getpid() == 1
	machine := pid1 && initsys.MachineInit()
	if machine {
		if err := initsys.MountEssentials(); err != nil {
			log.Error().Err(err).Msg("cannot mount every essential filesystem")
		}
	}
	if !pid1 {
		if err := initsys.SetSubreaper(); err != nil {
			log.Warn().Err(err).Msg("cannot become a subreaper: orphans of services will not be reaped")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reaped := make(chan struct{})
	go func() {
		reaper.Run(ctx)
		close(reaped)
	}()

	status, final := ExitFail, initsys.Poweroff
	// After MountEssentials, which mounts cgroup2 for PID 1 of a machine.
	cgroups, err := initsys.NewCgroups(log, supervise.CgroupsName(o.Socket))
	if err != nil {
		log.Info().Err(err).Msg("no cgroup per service: custody by session only")
	}
	ends, changed := make(chan supervise.End, 1), make(chan struct{}, 1)
	sup, err := supervise.New(supervise.Config{
		Log: log, Procs: reaper, StopTimeout: o.StopTimeout, Inherited: inherited, Cgroups: cgroups,
		Env: ChildEnv(os.Environ()),
		Ended: func(e supervise.End) {
			if e.Action != conffmt.ActionShutdown {
				return
			}
			select {
			case ends <- e:
			default: // one is enough to stop metad
			}
		},
		Changed: func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		log.Error().Err(err).Msg("cannot start supervisor")
	} else {
		exe, err := os.Executable()
		if err != nil {
			exe = os.Args[0]
		}
		d := New(Config{
			Options: o, Log: log, Exe: exe, Machine: machine, Signals: sigs, Procs: reaper,
			Supervisor: sup, Inherited: inherited, Handed: handed, Control: control,
			Ends: ends, Changed: changed,
		})
		status, final = d.Run()
	}
	if cgroups != nil { // not at a re-exec: Run does not return then
		if err := cgroups.Remove(); err != nil {
			// Busy: services left behind (each logged), or the tree of
			// another metad on this socket, which this one refused to
			// run beside.
			log.Debug().Err(err).Msg("cannot remove the services' cgroups")
		}
	}
	if pid1 {
		end(reaper, o, log, machine, final)
	}
	cancel()
	<-reaped
	return status
}

// end is the end of PID 1, once the services have stopped: every other
// process in the PID namespace gets SIGTERM, then SIGKILL; PID 1 of the
// machine then powers it off, reboots or halts it as final says, and never
// returns (the kernel would panic).
func end(reaper *initsys.Reaper, o Options, log zerolog.Logger, machine bool, final initsys.Final) {
	ctx, cancel := context.WithTimeout(context.Background(), o.StopTimeout+shutdownSlack)
	if err := reaper.Drain(ctx, o.StopTimeout); err != nil {
		log.Error().Err(err).Msg("cannot end every process")
	}
	cancel()
	if !machine {
		return
	}
	log.Info().Stringer("action", final).Msg("system going down")
	err := initsys.Finish(final)
	log.Error().Err(err).Msg("cannot finish shutdown; staying up")
	select {} // PID 1 of a machine must never exit
}
