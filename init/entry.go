package initsys

// What startEntry saves: the kernel's struct sigaction of each signal (the
// handler first), the mask, and whether it ran.
var (
	startActs  [maxSignal + 1][4]uint64
	startMask  uint64
	startSaved uint64
)

// savedStart returns the signal state startEntry saved, if it ran.
func savedStart() (SignalState, bool) {
	if startSaved == 0 {
		return SignalState{}, false
	}
	s := SignalState{Blocked: startMask}
	for sig := 1; sig <= maxSignal; sig++ {
		if startActs[sig][0] == sigIgn {
			s.Ignored |= 1 << (sig - 1)
		}
	}
	return s, true
}
