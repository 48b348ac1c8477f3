package daemon

import "strconv"

// Phase is where metad is in its life. The event loop alone changes it,
// through Daemon.set; control's requests read it to refuse what the phase
// forbids.
type Phase uint32

// The phases, in the order a metad goes through them. A re-exec goes from
// Reexecuting to the next image's Starting, or back to Serving when it
// fails.
const (
	Starting    Phase = iota // taking over or loading the config; control may already answer
	Serving                  // services run; every request is served
	Reexecuting              // control quiesced, services frozen, the next image being executed
	Stopping                 // services stopping; nothing new is started (ErrStopping)
	Stopped                  // everything stopped; metad exits (PID 1 of a machine: ends it)
)

// String returns the phase's name in lower case.
func (p Phase) String() string {
	switch p {
	case Starting:
		return "starting"
	case Serving:
		return "serving"
	case Reexecuting:
		return "reexecuting"
	case Stopping:
		return "stopping"
	case Stopped:
		return "stopped"
	default:
		return "phase(" + strconv.Itoa(int(p)) + ")"
	}
}

// next says whether a metad in phase p may go to phase to.
func (p Phase) next(to Phase) bool {
	switch p {
	case Starting:
		return to == Serving || to == Stopped // Stopped: it could not start
	case Serving:
		return to == Reexecuting || to == Stopping
	case Reexecuting:
		return to == Serving // the exec failed: undone
	case Stopping:
		return to == Stopped
	default: // Stopped is final
		return false
	}
}
