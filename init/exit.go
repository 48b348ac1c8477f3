package initsys

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is how a child ended, as wait4 reported it.
type Exit struct {
	PID    int
	Status unix.WaitStatus
	Time   time.Time // when it was reaped
}

// Code returns the status as a shell reports it: the exit status, or 128+N
// if the child was killed by signal N. It returns -1 for a status that is
// neither; the reaper never reports stopped or continued children.
func (e Exit) Code() int {
	switch {
	case e.Status.Exited():
		return e.Status.ExitStatus()
	case e.Status.Signaled():
		return 128 + int(e.Status.Signal())
	default:
		return -1
	}
}

// Signaled returns the signal that killed the child, and whether one did.
func (e Exit) Signaled() (syscall.Signal, bool) {
	if !e.Status.Signaled() {
		return 0, false
	}
	return e.Status.Signal(), true
}

// String describes the status for logs: "exit status 3", "signal 9
// (killed)", "signal 11 (segmentation fault, core dumped)".
func (e Exit) String() string {
	sig, ok := e.Signaled()
	switch {
	case e.Status.Exited():
		return "exit status " + strconv.Itoa(e.Status.ExitStatus())
	case ok:
		var notes []string
		if name := sig.String(); !strings.HasPrefix(name, "signal ") {
			notes = append(notes, name)
		}
		if e.Status.CoreDump() {
			notes = append(notes, "core dumped")
		}
		if len(notes) == 0 {
			return fmt.Sprintf("signal %d", int(sig))
		}
		return fmt.Sprintf("signal %d (%s)", int(sig), strings.Join(notes, ", "))
	default:
		return fmt.Sprintf("wait status %#x", uint32(e.Status))
	}
}

// StartCode returns the status a shell reports for a command that could not
// be started, given the error from Spawn: 127 when the program does not
// exist (ENOENT, ENOTDIR), 126 when it exists but cannot be executed
// (EACCES, ENOEXEC, ...). It returns 0 for a nil error.
func StartCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR):
		return 127
	default:
		return 126
	}
}
