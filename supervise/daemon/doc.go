// Package daemon owns metad's phases: starting (taking over from a
// previous image, refusing to run twice, loading the config), serving
// (the event loop: signals, control's requests, the command of command
// mode), re-executing (the hand-over to the next image, its envelope and
// the check protocol between images) and stopping (control quiesced
// first, the services stopped within a bound, the command stopped), and
// the end of PID 1 (every process ended; a machine powered off).
//
// It decides when things happen; it does not run services (package
// supervise does), reap or signal processes (initsys), parse the config
// (conffmt) or speak the control protocol (netctl, which it does not
// import: main makes the control servers and hands them in as Servers).
package daemon
