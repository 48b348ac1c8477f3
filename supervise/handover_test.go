package supervise

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"metad/conffmt"
)

// TestStateVersion1 reads a state as today's version 1 writes it: the
// config as the JSON of conffmt.Service.
func TestStateVersion1(t *testing.T) {
	web := daemon("web", 1, 1)
	web.Args = []string{"-c", "echo 'hi there'"}
	web.Env = []string{"A=1"}
	web.User = &conffmt.Credential{User: "www", UID: 33, GID: 33, Groups: []uint32{33, 4}}
	echo := streamService("echo", 7000, 4)
	echo.Addr = netip.MustParseAddr("127.0.0.1")
	held := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type v1 struct {
		Config    conffmt.Service `json:"config"`
		Enabled   bool            `json:"enabled"`
		Crashes   int             `json:"crashes"`
		Restarts  int             `json:"restarts"`
		Held      []time.Time     `json:"held,omitempty"`
		Socket    int             `json:"socket"`
		Instances []InstanceState `json:"instances"`
	}
	old := struct {
		Version  int  `json:"version"`
		Services []v1 `json:"services"`
	}{1, []v1{
		{Config: web, Enabled: true, Crashes: 2, Restarts: 5, Socket: -1, Instances: []InstanceState{{PID: 812, PGID: 812}}},
		{Config: echo, Enabled: true, Held: []time.Time{held}, Socket: 9},
	}}
	data, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Version != StateVersion || len(st.Services) != 2 {
		t.Fatalf("got version %d with %d services, want %d with 2", st.Version, len(st.Services), StateVersion)
	}
	for i, want := range []conffmt.Service{web, echo} {
		got, err := st.Services[i].service()
		if err != nil {
			t.Fatalf("%s: %v", want.Name, err)
		}
		want.ReadyTimeout = 90 * time.Second // an option version 1 did not know gets its default
		if !sameService(got, want) {
			t.Errorf("%s: got %+v, want %+v", want.Name, got, want)
		}
	}
	ss := st.Services[0]
	if !strings.HasPrefix(ss.Config, "web daemon ") || ss.Crashes != 2 || ss.Restarts != 5 || len(ss.Instances) != 1 || ss.Instances[0].PID != 812 {
		t.Errorf("web: got %+v", ss)
	}
	if got := st.Services[1]; !slices.Equal(got.Held, []time.Time{held}) || got.Socket != 9 {
		t.Errorf("echo: got held %v, socket %d", got.Held, got.Socket)
	}
	if got, want := st.Descriptors(), []NamedFD{{"echo/socket", 9}}; !slices.Equal(got, want) {
		t.Errorf("got descriptors %v, want %v", got, want)
	}
	// Version 2 round trip.
	data, err = json.Marshal(&st)
	if err != nil {
		t.Fatal(err)
	}
	var again State
	if err := json.Unmarshal(data, &again); err != nil || again.Services[0].Config != ss.Config {
		t.Errorf("version 2 round trip: got %+v, %v", again.Services[0], err)
	}
	if err := json.Unmarshal([]byte(`{"version":3,"services":[]}`), &again); err == nil || !strings.Contains(err.Error(), "version 3") {
		t.Errorf("version 3: got %v, want a refusal naming it", err)
	}
}
