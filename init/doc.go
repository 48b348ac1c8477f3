// Package initsys owns metad's processes: starting children, reaping them,
// the signal policy, and the duties of PID 1.
//
// The directory is init/ because that is what it is; the package is initsys
// because "init" is a name Go reserves for init functions, so a package
// called init could not be referred to by its importers.
//
// What it owns:
//
//   - The only wait. Reaper.Run is the only caller of wait4 in metad. Every
//     child, whether started by Reaper.Spawn or adopted (a daemon that
//     double-forked and was re-parented to metad, the subreaper), is reaped
//     there, and its exit goes to the one callback registered for its pid.
//     Its helper learns of an exit from waitid(2) with WNOWAIT, which
//     reaps nothing.
//     Nothing else in metad may wait for a child: os/exec's Cmd.Wait and
//     os.Process.Wait would steal exits from the reaper.
//   - Starting children. Spawn forks, execs and registers the pid in one
//     step, under the lock the reaper holds around wait4, so an exit is
//     never reaped before its owner is known. Children get file descriptors
//     0, 1, 2 and those the caller names, and nothing else: the Go runtime
//     opens every descriptor close-on-exec, and CloseOnExecAll marks the
//     ones metad inherited.
//   - The signal policy. Policy is a pure table from a signal and a mode to
//     an action; Notify delivers every signal metad handles; Forward passes
//     one on. Children must start with default signal dispositions, so
//     metad never calls signal.Ignore: an ignored disposition survives
//     exec, while a caught one is reset to the default. Signals metad does
//     not want are received through Notify and dropped instead. Spawn
//     gives every child an empty signal mask, whatever metad was started
//     with, except the command of command mode, which gets the state metad
//     was started with (Proc.Signals, StartSignals), through a shim (Shim)
//     when that state ignores signals. The same shim applies a Proc's
//     Rlimits, Nice and Umask, which the Go fork cannot set in the child;
//     a Proc that asks for none of these is started without it.
//   - Cgroups: a cgroup v2 per service where metad can create one
//     (NewCgroups), which children start in (Proc.Cgroup) and which lists
//     and kills every process of a service, whatever its session.
//   - PID 1: SetSubreaper, MachineInit, MountEssentials, KillAll, Drain and
//     Finish.
//
// What it does not own: services, their state, restarts and backoff, and
// when a service's processes are stopped (package supervise), and the
// configuration. It imports no other package of metad.
package initsys
