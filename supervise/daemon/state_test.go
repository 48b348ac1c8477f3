package daemon

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"metad/supervise"
)

// The golden states in testdata were captured from metad 9739c5e, the
// last binary of envelope version 1: it ran with the config below, network
// control on, and was told to re-execute into a script that copied the
// memfd named by METAD_STATE_FD and then executed metad 9739c5e again.
//
//	v1-config.json: echo stream port=17007 addr=127.0.0.1 max=4 /bin/cat
//	                sock listener port=17008 addr=127.0.0.1 /bin/sleep 1000
//	                three daemon min=2 max=2 /bin/sleep 1000
//	                off daemon disabled /bin/sleep 1000
//	                crashy daemon backoff=1h /bin/false
//	                talker daemon watch_output /bin/sh -c 'while :; do echo tick; sleep 1; done'
//	v1-command.json: metad -f cmd.conf -- /bin/sleep 1000, with
//	                helper daemon /bin/sleep 1000
func TestDecodeVersion1(t *testing.T) {
	tests := []struct {
		file     string
		command  int
		fds      []NamedFD
		services []string
	}{
		{"v1-config.json", 0,
			[]NamedFD{{"control", 19}, {"network", 20}, {"echo/socket", 12}, {"talker/27592/stdout", 15},
				{"talker/27592/stderr", 17}, {"sock/socket", 18}},
			[]string{"echo", "talker", "off", "three", "sock", "crashy"}},
		{"v1-command.json", 29833, []NamedFD{{"control", 9}}, []string{"helper"}},
	}
	for _, tt := range tests {
		data, err := os.ReadFile("testdata/" + tt.file)
		if err != nil {
			t.Fatal(err)
		}
		h, err := decode(data)
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if h.Version != 1 || h.Command != tt.command || !slices.Equal(h.FDs, tt.fds) {
			t.Errorf("%s: got version %d, command %d, descriptors %v; want 1, %d, %v", tt.file, h.Version, h.Command, h.FDs, tt.command, tt.fds)
		}
		var names []string
		for _, s := range h.Services.Services {
			if f := strings.Fields(s.Config); len(f) > 0 {
				names = append(names, f[0])
			}
		}
		// supervise reads version 1 service records into its own version.
		if h.Services.Version != supervise.StateVersion || !slices.Equal(names, tt.services) {
			t.Errorf("%s: got services %v of version %d, want %v of version %d", tt.file, names, h.Services.Version, tt.services, supervise.StateVersion)
		}
	}
}

// TestEncodeDecode: each version this binary writes reads back the same.
func TestEncodeDecode(t *testing.T) {
	st := &supervise.State{Version: supervise.StateVersion, Services: []supervise.ServiceState{
		{Config: "web stream port=80 /bin/cat", Path: "/bin/cat", Socket: 7, Outputs: []supervise.OutputState{{PID: 99, Stream: "stdout", FD: 8}}},
	}}
	own := []NamedFD{{fdControl, 5}, {fdNetwork, 6}}
	want := append(slices.Clone(own), NamedFD{"web/socket", 7}, NamedFD{"web/99/stdout", 8})
	versions := []int{Version}
	if supervise.StateVersion == 1 {
		versions = append(versions, 1)
	}
	for _, v := range versions {
		data, err := encode(v, st, 42, own)
		if err != nil {
			t.Fatal(err)
		}
		h, err := decode(data)
		if err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
		if h.Version != v || h.Command != 42 || !slices.Equal(h.FDs, want) || h.Services.Services[0].Config != "web stream port=80 /bin/cat" {
			t.Errorf("version %d: got %+v, want it back", v, h)
		}
	}
	data, _ := encode(Version, st, 42, own)
	var tagged map[string]any
	json.Unmarshal(data, &tagged)
	if tagged["format"] != "metad-state" || tagged["version"] != float64(Version) {
		t.Errorf("got %s, want it tagged", data)
	}
}

// TestDecodeRefuses: another format, another version, a field this binary
// does not know, and a state without services are refused, not guessed.
func TestDecodeRefuses(t *testing.T) {
	good, _ := encode(Version, &supervise.State{Version: supervise.StateVersion}, 0, nil)
	tests := []struct{ name, state, err string }{
		{"another format", `{"format":"other-state","version":2}`, "format"},
		{"a newer version", `{"format":"metad-state","version":3,"services":{"version":1}}`, "version 3"},
		{"an unknown field", strings.Replace(string(good), `"fds"`, `"added_later":1,"fds"`, 1), "added_later"},
		{"an unknown field in version 1", `{"services":{"version":1},"control":-1,"network":-1,"added_later":1}`, "added_later"},
		{"no services", `{"format":"metad-state","version":2,"fds":[]}`, "no services"},
		{"service records of another version", `{"format":"metad-state","version":2,"services":{"version":99}}`, "version 99"},
		{"version 1 with newer records", `{"services":{"version":99},"control":-1,"network":-1}`, "version 99"},
		{"not JSON", `metad`, "cannot read state"},
	}
	for _, tt := range tests {
		if _, err := decode([]byte(tt.state)); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: got %v, want an error with %q", tt.name, err, tt.err)
		}
	}
}

// stateFD returns a memfd holding data, closed at the end of the test.
func stateFD(t *testing.T, data []byte) int {
	t.Helper()
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

// TestReadState reads a state, and refuses one of another version without
// closing its descriptor: the previous binary, executed again, must still
// find the state there. A table naming a descriptor that is not open, or
// one twice, is refused.
func TestReadState(t *testing.T) {
	control := devNull()
	defer unix.Close(control)
	data, _ := encode(Version, &supervise.State{Version: supervise.StateVersion}, 42, []NamedFD{{fdControl, control}})
	h, err := readState(strconv.Itoa(stateFD(t, data)))
	if err != nil {
		t.Fatalf("state of this version: %v", err)
	}
	if h.Command != 42 || h.fd(fdControl) != control || h.fd(fdNetwork) != -1 {
		t.Errorf("got command %d, control %d, network %d; want 42, %d, -1", h.Command, h.fd(fdControl), h.fd(fdNetwork), control)
	}

	other := stateFD(t, []byte(`{"format":"metad-state","version":3}`))
	for range 2 {
		if _, err := readState(strconv.Itoa(other)); err == nil {
			t.Fatal("state of another version: read, want an error")
		}
		if _, err := unix.FcntlInt(uintptr(other), unix.F_GETFD, 0); err != nil {
			t.Errorf("the state's descriptor after the refusal: %v, want it open", err)
		}
	}

	const closed = 1<<20 - 1 // above any descriptor this test opens
	for name, fds := range map[string][]NamedFD{
		"closed": {{fdControl, closed}},
		"twice":  {{fdControl, control}, {fdNetwork, control}},
	} {
		data, _ := encode(Version, &supervise.State{Version: supervise.StateVersion}, 0, fds)
		if _, err := readState(strconv.Itoa(stateFD(t, data))); err == nil {
			t.Errorf("a descriptor %s: read, want an error", name)
		}
	}
	if _, err := readState("x"); err == nil {
		t.Error(`METAD_STATE_FD="x": read, want an error`)
	}
}

func FuzzDecodeState(f *testing.F) {
	for _, file := range []string{"v1-config.json", "v1-command.json"} {
		data, err := os.ReadFile("testdata/" + file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	good, _ := encode(Version, &supervise.State{Version: supervise.StateVersion}, 42, []NamedFD{{fdControl, 3}})
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := decode(data)
		if err != nil {
			return
		}
		if h.Services == nil || (h.Version != 1 && h.Version != Version) {
			t.Errorf("%q: got %+v, want services and a known version", data, h)
		}
	})
}
