package initsys

// startEntry is an entry point for metad's binary, to be linked with
// -ldflags=-E=metad/init.startEntry: before it jumps to the Go runtime's
// own (_rt0_amd64_linux), which replaces most dispositions and unblocks
// signals on its threads, it saves the signal state the process was
// started with, for StartSignals. Without it, StartSignals sees only what
// the runtime left as it was.
//
//lint:ignore U1000 the linker's entry point, named by -E only
func startEntry()
