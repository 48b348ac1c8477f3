package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"metad/supervise"
)

// The hand-over of a re-exec. metad executes its binary again (the file
// on disk, so that an upgrade takes effect) in the same process, so that
// every instance stays its child. The state goes in a memfd whose number
// is in METAD_STATE_FD; the descriptors handed over (control sockets,
// services' listening sockets and watched pipes) stay open across exec
// and are named in the state's descriptor table. Should the new image
// fail to read the state, it executes the old binary again (kept open as
// METAD_PREVIOUS_EXE_FD) with the same state.
//
// The state is an envelope, tagged and versioned:
//
//	{"format": "metad-state", "version": 2, "command": PID,
//	 "fds": [{"name": "control", "fd": N}, ...], "services": {...}}
//
// "services" holds supervise's service records, which carry a version of
// their own. A reader refuses a format or version it does not know, and a
// field it does not know: a field is added with a new version, never
// silently. Version 1, written by metad binaries before there was an
// envelope, is {"services": {...}, "command": PID, "control": N,
// "network": N}; this binary reads it, and writes it for a binary that
// reads nothing newer while the service records are of version 1.
const (
	Format  = "metad-state" // the envelope's tag, and the word of the check protocol
	Version = 2             // the envelope version this binary writes

	envStateFD     = "METAD_STATE_FD"
	envPreviousExe = "METAD_PREVIOUS_EXE_FD"
)

// statesRead is the envelope versions this binary reads, oldest first.
var statesRead = []int{1, Version}

// The names of metad's own descriptors in the table; supervise names the
// services'.
const (
	fdControl = "control" // the local control socket
	fdNetwork = "network" // the network control socket
)

// NamedFD is a descriptor handed over, with what it is.
type NamedFD struct {
	Name string `json:"name"`
	FD   int    `json:"fd"`
}

// Handover is the state a previous image of metad handed over.
type Handover struct {
	Version  int              // of the envelope it came in
	Command  int              // command mode: the command's pid; 0 if none
	FDs      []NamedFD        // every descriptor handed over
	Services *supervise.State // the services, their instances and descriptors
}

// fd returns the descriptor named name, or -1.
func (h *Handover) fd(name string) int {
	if h == nil {
		return -1
	}
	for _, f := range h.FDs {
		if f.Name == name {
			return f.FD
		}
	}
	return -1
}

// envelope is the state as this binary writes it.
type envelope struct {
	Format   string          `json:"format"`
	Version  int             `json:"version"`
	Command  int             `json:"command,omitempty"`
	FDs      []NamedFD       `json:"fds"`
	Services json.RawMessage `json:"services"`
}

// envelopeV1 is the state of envelope version 1.
type envelopeV1 struct {
	Services json.RawMessage `json:"services"`
	Command  int             `json:"command,omitempty"`
	Control  int             `json:"control"` // -1 if none
	Network  int             `json:"network"` // -1 if none
}

// encode returns the state in envelope version v (1 or Version). own are
// metad's own descriptors (control sockets), named.
func encode(v int, st *supervise.State, command int, own []NamedFD) ([]byte, error) {
	services, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("cannot encode state: %w", err)
	}
	switch v {
	case Version:
		fds := append(slices.Clone(own), stateDescriptors(st)...)
		return json.Marshal(envelope{Format: Format, Version: Version, Command: command, FDs: fds, Services: services})
	case 1:
		e := envelopeV1{Services: services, Command: command, Control: -1, Network: -1}
		for _, f := range own {
			switch f.Name {
			case fdControl:
				e.Control = f.FD
			case fdNetwork:
				e.Network = f.FD
			}
		}
		return json.Marshal(e)
	default:
		return nil, fmt.Errorf("cannot encode state version %d", v)
	}
}

// decode reads a state of any envelope version this binary reads. It
// does not check the descriptors (see Handover.check).
func decode(data []byte) (*Handover, error) {
	var head struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("cannot read state: %w", err)
	}
	h := &Handover{Version: head.Version}
	var services json.RawMessage
	switch {
	case head.Format == "" && head.Version == 0: // version 1: no envelope yet
		e := envelopeV1{Control: -1, Network: -1}
		if err := strict(data, &e); err != nil {
			return nil, err
		}
		h.Version, h.Command, services = 1, e.Command, e.Services
		for _, f := range []NamedFD{{fdControl, e.Control}, {fdNetwork, e.Network}} {
			if f.FD >= 0 {
				h.FDs = append(h.FDs, f)
			}
		}
	case head.Format != Format:
		return nil, fmt.Errorf("cannot read state: format %q, want %q", head.Format, Format)
	case head.Version == Version:
		var e envelope
		if err := strict(data, &e); err != nil {
			return nil, err
		}
		h.Command, h.FDs, services = e.Command, e.FDs, e.Services
	default:
		return nil, fmt.Errorf("cannot read state: version %d; this metad reads versions %s", head.Version, joinInts(statesRead))
	}
	st, err := decodeServices(services)
	if err != nil {
		return nil, err
	}
	if h.Version == 1 {
		// supervise converts the records it reads to its own version:
		// what the envelope allows is the version they were written in.
		var raw struct {
			Version int `json:"version"`
		}
		if err := json.Unmarshal(services, &raw); err != nil || raw.Version != 1 {
			return nil, fmt.Errorf("cannot read state: service records of version %d in an envelope of version 1", raw.Version)
		}
		h.FDs = append(h.FDs, stateDescriptors(st)...)
	}
	h.Services = st
	return h, nil
}

// strict decodes data into v, refusing fields v does not have.
func strict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("cannot read state: %w", err)
	}
	return nil
}

// decodeServices reads supervise's service records, of any version this
// binary reads.
func decodeServices(data json.RawMessage) (*supervise.State, error) {
	if len(data) == 0 || string(data) == "null" {
		return nil, errors.New("cannot read state: no services")
	}
	var st supervise.State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("cannot read state: %w", err)
	}
	if !slices.Contains(servicesRead(), st.Version) {
		return nil, fmt.Errorf("cannot read state: service records of version %d; this metad reads versions %s", st.Version, joinInts(servicesRead()))
	}
	return &st, nil
}

// check makes sure every descriptor of the table is open and named once.
func (h *Handover) check() error {
	seen := make(map[int]string)
	for _, f := range h.FDs {
		if other, dup := seen[f.FD]; dup {
			return fmt.Errorf("cannot read state: descriptor %d is both %q and %q", f.FD, other, f.Name)
		}
		seen[f.FD] = f.Name
		if _, err := unix.FcntlInt(uintptr(f.FD), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("cannot read state: descriptor %q (%d): %w", f.Name, f.FD, err)
		}
	}
	return nil
}

// Take reads the state left by the previous image, if metad was started
// by a re-exec; it returns nil, nil otherwise. When the state cannot be
// read it executes the previous binary again, which can; it returns an
// error only when that is impossible too, and metad then starts afresh.
func Take() (*Handover, error) {
	v := os.Getenv(envStateFD)
	if v == "" {
		return nil, nil
	}
	h, err := readState(v)
	if err == nil {
		closeEnvFD(envStateFD)
		closeEnvFD(envPreviousExe)
		return h, nil
	}
	if prev, perr := strconv.Atoi(os.Getenv(envPreviousExe)); perr == nil {
		fmt.Fprintf(os.Stderr, "metad: cannot take the handed-over state (%v); going back to the previous binary\n", err)
		execFD(prev, os.Args, withoutEnv(os.Environ(), envPreviousExe))
	}
	return nil, err
}

// closeEnvFD closes the descriptor named by the variable name and
// removes the variable.
func closeEnvFD(name string) {
	if fd, err := strconv.Atoi(os.Getenv(name)); err == nil {
		unix.Close(fd)
	}
	os.Unsetenv(name)
}

// readState reads the state at the descriptor named by v. It leaves the
// descriptor open, for the previous binary to read should this image not
// understand the state.
func readState(v string) (*Handover, error) {
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
	h, err := decode(data)
	if err != nil {
		return nil, err
	}
	if err := h.check(); err != nil {
		return nil, err
	}
	return h, nil
}

// writeState puts data in a new memfd without close-on-exec, for the next
// image; the caller closes it.
func writeState(data []byte) (int, error) {
	fd, err := unix.MemfdCreate(Format, 0)
	if err != nil {
		return -1, fmt.Errorf("cannot write state: %w", err)
	}
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("cannot write state: %w", err)
		}
		data = data[n:]
	}
	return fd, nil
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
		if !slices.Contains(names, name) {
			out = append(out, kv)
		}
	}
	return out
}

// stateDescriptors names the descriptors the service records hand over,
// in this package's NamedFD, so that the envelope's JSON form is its own.
func stateDescriptors(st *supervise.State) []NamedFD {
	var fds []NamedFD
	for _, d := range st.Descriptors() {
		fds = append(fds, NamedFD{Name: d.Name, FD: d.FD})
	}
	return fds
}
