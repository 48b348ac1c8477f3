package main

import (
	"encoding/json"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"metad/supervise"
)

// stateFD returns a memfd holding v as JSON, closed at the end of the test.
func stateFD(t *testing.T, v any) int {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.MemfdCreate("metad-state-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.Write(fd, data); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestReadHandover reads a state of this image's version, and refuses one
// of another version without closing its descriptor: the previous binary,
// executed again, must still find the state there.
func TestReadHandover(t *testing.T) {
	good := stateFD(t, handover{Services: &supervise.State{Version: supervise.StateVersion}, Command: 42, Control: 7})
	h, err := readHandover(strconv.Itoa(good))
	if err != nil {
		t.Fatalf("state of this version: %v", err)
	}
	if h.Command != 42 || h.Control != 7 {
		t.Errorf("got command %d, control %d; want 42, 7", h.Command, h.Control)
	}

	other := stateFD(t, handover{Services: &supervise.State{Version: supervise.StateVersion + 1}, Control: -1})
	if _, err := readHandover(strconv.Itoa(other)); err == nil {
		t.Fatal("state of another version: read, want an error")
	}
	if _, err := unix.FcntlInt(uintptr(other), unix.F_GETFD, 0); err != nil {
		t.Errorf("the state's descriptor after the refusal: %v, want it open", err)
	}
	if _, err := readHandover(strconv.Itoa(other)); err == nil {
		t.Error("state of another version, read again: read, want an error")
	}

	if _, err := readHandover("x"); err == nil {
		t.Error(`METAD_STATE_FD="x": read, want an error`)
	}
}
