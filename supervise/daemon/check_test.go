package daemon

import (
	"slices"
	"strings"
	"testing"

	"metad/supervise"
)

// TestAnswerCompatible: the answer starts with the two lines metad 9739c5e
// reads (it takes over only when line 1 is "metad-state 1", and hands the
// network socket only when line 2 is "takes network"), and this binary
// reads its own answer back as able to take what it writes.
func TestAnswerCompatible(t *testing.T) {
	lines := strings.Split(answer(), "\n")
	if lines[0] != "metad-state 1" || lines[1] != "takes network" {
		t.Errorf("got %q, want metad-state 1 and takes network first", lines[:2])
	}
	a, err := parseAnswer(answer())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := a.choose(); v != Version || err != nil {
		t.Errorf("its own answer: got version %d, %v; want %d", v, err, Version)
	}
	if !a.TakesNetwork || !slices.Contains(a.States, 1) || !slices.Contains(a.Services, 1) {
		t.Errorf("got %+v, want it to take the network socket and read version 1", a)
	}
}

func TestParseAnswer(t *testing.T) {
	tests := []struct {
		name, text string
		want       Answer
		err        string // in the error; "" for none
	}{
		{"metad 9739c5e", "metad-state 1\ntakes network\n", Answer{[]int{1}, []int{1}, true}, ""},
		{"before the network socket was handed over", "metad-state 1\n", Answer{[]int{1}, []int{1}, false}, ""},
		{"negotiating", "metad-state 1\ntakes network\nreads metad-state 1 2 3\nreads services 1 2\nsomething later\n",
			Answer{[]int{1, 2, 3}, []int{1, 2}, true}, ""},
		{"a later binary that dropped version 1", "metad-state 2\ntakes network\nreads metad-state 2\nreads services 2\n",
			Answer{[]int{2}, []int{2}, true}, ""},
		{"not metad", "hello\n", Answer{}, `answered "hello"`},
		{"nothing", "", Answer{}, `answered ""`},
		{"no number", "metad-state x\n", Answer{}, "answered"},
	}
	for _, tt := range tests {
		got, err := parseAnswer(tt.text)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: got %v, want an error with %q", tt.name, err, tt.err)
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.err == "" && (!slices.Equal(got.States, tt.want.States) || !slices.Equal(got.Services, tt.want.Services) || got.TakesNetwork != tt.want.TakesNetwork):
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// TestChoose: the newest envelope both read, version 1 only while the
// service records are of version 1, and a refusal that says why.
func TestChoose(t *testing.T) {
	tests := []struct {
		a    Answer
		want int // 0: refused
	}{
		{Answer{States: []int{1, 2}, Services: []int{1, supervise.StateVersion}}, Version},
		{Answer{States: []int{2, 3}, Services: []int{supervise.StateVersion}}, Version},
		{Answer{States: []int{1}, Services: []int{1}}, map[bool]int{true: 1}[supervise.StateVersion == 1]},
		{Answer{States: []int{2}, Services: []int{supervise.StateVersion + 1}}, 0},
		{Answer{States: []int{999}, Services: []int{999}}, 0},
	}
	for _, tt := range tests {
		got, err := tt.a.choose()
		if got != tt.want || (err != nil) != (tt.want == 0) {
			t.Errorf("%+v: got %d, %v; want %d", tt.a, got, err, tt.want)
		}
		if err != nil && !strings.Contains(err.Error(), "this metad writes version") {
			t.Errorf("%+v: got %q, want the reason", tt.a, err)
		}
	}
}

func FuzzParseAnswer(f *testing.F) {
	f.Add(answer())
	f.Add("metad-state 1\ntakes network\n")
	f.Add("metad-state 2\nreads metad-state\nreads services x 3\n")
	f.Fuzz(func(t *testing.T, text string) {
		a, err := parseAnswer(text)
		if err != nil {
			return
		}
		if len(a.States) == 0 && !strings.Contains(text, "reads") {
			t.Errorf("%q: got %+v, want the version of line 1 at least", text, a)
		}
		a.choose()
	})
}
