package daemon

import (
	"strconv"

	"metad/supervise"
)

// stateDescriptors names the descriptors the service records hand over.
//
// TEMPORARY, for the merge to replace: it stands in for the agreed
// supervise.State.Descriptors() []supervise.NamedFD until that lands.
// Then its body becomes a copy of st.Descriptors() into this package's
// NamedFD (which keeps the envelope's JSON form this package's own).
func stateDescriptors(st *supervise.State) []NamedFD {
	var fds []NamedFD
	for _, s := range st.Services {
		name := "service " + s.Config.Name
		if s.Socket >= 0 {
			fds = append(fds, NamedFD{name + " socket", s.Socket})
		}
		for _, o := range s.Outputs {
			fds = append(fds, NamedFD{name + " " + o.Stream + " " + strconv.Itoa(o.PID), o.FD})
		}
	}
	return fds
}
