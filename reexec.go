package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"metad/init"
	"metad/supervise"
)

// Re-exec: metad executes its binary again (the file on disk, so that an
// upgrade takes effect) in the same process, so that every instance stays
// its child. The state goes in a memfd whose number is in METAD_STATE_FD;
// listening sockets and watched pipes stay open across exec and are named
// by number in the state. Before it executes anything, the old image runs
// the new binary with METAD_REEXEC_CHECK set and checks that it answers
// with a state version it can hand over; a binary that is missing, not
// executable or of another state version is refused and nothing changes.
// Should the new image still fail to read the state, it executes the old
// binary again (kept open as METAD_PREVIOUS_EXE_FD) with the same state.
//
// The answer's first line is the state version, and all that images
// before the network control socket was handed over read. A second line
// names what else the binary takes over: "takes network" says it takes
// the network control socket; a binary that does not say so (an older one,
// after a rollback) gets none and binds the port itself, as it expects.
const (
	envStateFD     = "METAD_STATE_FD"
	envPreviousExe = "METAD_PREVIOUS_EXE_FD"
	envReexecCheck = "METAD_REEXEC_CHECK"
)

// checkTimeout bounds the check run of a new binary.
const checkTimeout = 5 * time.Second

// quiesceTimeout bounds the wait for the control requests being answered
// when metad re-executes; a request still unanswered after it is cut off.
const quiesceTimeout = 5 * time.Second

// handover is the whole state a metad hands to its next image.
type handover struct {
	Services *supervise.State `json:"services"`
	Command  int              `json:"command,omitempty"` // the command's pid in command mode
	Control  int              `json:"control"`           // the control socket, -1 if none
	Network  int              `json:"network"`           // the network control socket, -1 if none
}

// answerCheck is the first line a binary run with METAD_REEXEC_CHECK
// prints; takesLine is the second.
func answerCheck() string {
	return "metad-state " + strconv.Itoa(supervise.StateVersion)
}

const takesLine = "takes network"

// checkBinary runs path with METAD_REEXEC_CHECK and checks its answer. It
// reports whether the binary takes over the network control socket.
func checkBinary(reaper *initsys.Reaper, path string) (takesNetwork bool, err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return false, err
	}
	defer r.Close()
	exited := make(chan initsys.Exit, 1)
	p := &initsys.Proc{
		Path:   path,
		Argv:   []string{path},
		Env:    append(os.Environ(), envReexecCheck+"=1"),
		Files:  []int{-1, int(w.Fd()), 2},
		Setsid: true,
	}
	pid, err := reaper.Spawn(p, func(e initsys.Exit) { exited <- e })
	w.Close()
	if err != nil {
		return false, err
	}
	r.SetReadDeadline(time.Now().Add(checkTimeout))
	br := bufio.NewReader(io.LimitReader(r, 256))
	line, _ := br.ReadString('\n')
	takes, _ := br.ReadString('\n')
	select {
	case e := <-exited:
		if e.Code() != 0 {
			return false, fmt.Errorf("its check run ended with %s", e)
		}
	case <-time.After(checkTimeout):
		syscall.Kill(pid, syscall.SIGKILL)
		<-exited
		return false, errors.New("its check run did not end")
	}
	if got := strings.TrimSpace(line); got != answerCheck() {
		return false, fmt.Errorf("it answered %q, want %q", got, answerCheck())
	}
	return strings.TrimSpace(takes) == takesLine, nil
}

// reexec hands everything over and executes d.exe in place of this image.
// It returns only if that failed, after undoing the handover.
func (d *daemon) reexec() error {
	// The control requests being answered are answered first; new ones
	// wait in the socket's backlog for the next image. This comes before
	// the reload lock and the freeze: a request may need either.
	ctx, cancel := context.WithTimeout(context.Background(), quiesceTimeout)
	defer cancel()
	var resumes []func()
	quiesce := func(q func(context.Context) (func(), error)) {
		resume, err := q(ctx)
		resumes = append(resumes, resume)
		if err != nil {
			d.log.Warn().Err(err).Msg("control requests still unanswered: re-executing all the same")
		}
	}
	if d.local != nil {
		quiesce(d.local.Quiesce)
	}
	if d.netSrv != nil {
		quiesce(d.netSrv.Quiesce)
	}
	resumeControl := func() {
		for _, r := range resumes {
			r()
		}
	}
	// No reload may change the services while they are handed over.
	d.reloading.Lock()
	defer d.reloading.Unlock()
	st, resume, err := d.sup.Handover(d.reaper.Pause)
	if err != nil {
		resumeControl()
		return err
	}
	fail := func(err error) error {
		resume()
		resumeControl()
		return fmt.Errorf("cannot re-execute %q: %w", d.exe, err)
	}
	h := handover{Services: st, Command: d.cmdPid, Control: -1, Network: -1}
	if d.local != nil {
		if fd, err := d.local.Dup(); err == nil {
			h.Control = fd
			defer unix.Close(fd)
		} else {
			d.log.Warn().Err(err).Msg("cannot hand over the control socket")
		}
	}
	if d.netSrv != nil && d.nextTakesNetwork.Load() {
		if fd, err := d.netSrv.Dup(); err == nil {
			h.Network = fd
			defer unix.Close(fd)
		} else {
			d.log.Warn().Err(err).Msg("cannot hand over the network control socket")
		}
	}
	data, err := json.Marshal(h)
	if err != nil {
		return fail(err)
	}
	fd, err := unix.MemfdCreate("metad-state", 0) // no close-on-exec: for the new image
	if err != nil {
		return fail(err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, data); err != nil {
		return fail(err)
	}
	env := withoutEnv(os.Environ(), envStateFD, envPreviousExe)
	env = append(env, envStateFD+"="+strconv.Itoa(fd))
	if prev, err := unix.Open("/proc/self/exe", unix.O_RDONLY, 0); err == nil {
		defer unix.Close(prev)
		env = append(env, envPreviousExe+"="+strconv.Itoa(prev))
	}
	instances, sockets := st.Counts()
	d.log.Info().Str("binary", d.exe).Int("instances", instances).Int("sockets", sockets).Msg("re-executing")
	err = unix.Exec(d.exe, os.Args, env)
	return fail(err)
}

// takeHandover reads the state left by the previous image, if metad was
// started by a re-exec. When the state cannot be read it executes the
// previous binary again, which can; it returns an error only when that is
// impossible too, and metad then starts afresh.
func takeHandover() (*handover, error) {
	v := os.Getenv(envStateFD)
	if v == "" {
		return nil, nil
	}
	h, err := readHandover(v)
	if err == nil {
		if fd, err := strconv.Atoi(v); err == nil {
			unix.Close(fd)
		}
		os.Unsetenv(envStateFD)
		if prev := os.Getenv(envPreviousExe); prev != "" {
			if n, err := strconv.Atoi(prev); err == nil {
				unix.Close(n)
			}
			os.Unsetenv(envPreviousExe)
		}
		return h, nil
	}
	if prev, perr := strconv.Atoi(os.Getenv(envPreviousExe)); perr == nil {
		env := withoutEnv(os.Environ(), envPreviousExe)
		fmt.Fprintf(os.Stderr, "metad: cannot take the handed-over state (%v); going back to the previous binary\n", err)
		execFD(prev, os.Args, env)
	}
	return nil, err
}

// readHandover reads the state at the descriptor named by v. It leaves
// the descriptor open, for the previous binary to read should this image
// not understand the state.
func readHandover(v string) (*handover, error) {
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("cannot read state: %s=%q is not a descriptor", envStateFD, v)
	}
	var data []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Pread(fd, buf, int64(len(data)))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read state: %w", err)
		}
		if n == 0 {
			break
		}
		data = append(data, buf[:n]...)
	}
	h := handover{Control: -1, Network: -1} // what an image that hands over neither writes
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("cannot read state: %w", err)
	}
	if h.Services == nil || h.Services.Version != supervise.StateVersion {
		return nil, fmt.Errorf("cannot read state: not version %d", supervise.StateVersion)
	}
	return &h, nil
}

// execFD executes the program open at fd (execveat with AT_EMPTY_PATH).
// It returns only on failure.
func execFD(fd int, argv, env []string) error {
	path, err := unix.BytePtrFromString("")
	if err != nil {
		return err
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	envp, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(path)),
		uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])), unix.AT_EMPTY_PATH, 0)
	return errno
}

// withoutEnv returns env without the variables named.
func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || name == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}
