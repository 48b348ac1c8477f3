package conffmt

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParseDependencies(t *testing.T) {
	tests := []struct {
		name, src   string
		after, deps map[string][]string // each service's After and Needs, when not empty
	}{
		{"after", "a daemon sh\nb daemon sh\nc daemon after=b,a sh",
			map[string][]string{"c": {"b", "a"}}, nil},
		{"needs", "a daemon sh\nb daemon sh\nc daemon needs=a,b sh",
			map[string][]string{"c": {"a", "b"}}, map[string][]string{"c": {"a", "b"}}},
		{"after first, then needs", "a daemon sh\nb daemon sh\nx daemon sh\nc daemon needs=a,b,x after=b sh",
			map[string][]string{"c": {"b", "a", "x"}}, map[string][]string{"c": {"a", "b", "x"}}},
		{"needs before after", "a daemon sh\nb daemon sh\nc daemon after=a needs=b,a sh",
			map[string][]string{"c": {"a", "b"}}, map[string][]string{"c": {"b", "a"}}},
		{"later service", "c daemon after=a sh\na daemon sh",
			map[string][]string{"c": {"a"}}, nil},
		{"diamond", "top daemon needs=left,right sh\nleft daemon after=bottom sh\nright stream port=80 needs=bottom sh\nbottom daemon sh",
			map[string][]string{"top": {"left", "right"}, "left": {"bottom"}, "right": {"bottom"}},
			map[string][]string{"top": {"left", "right"}, "right": {"bottom"}}},
		{"chain", "a daemon sh\nb daemon after=a sh\nc daemon after=a,b sh\nd daemon needs=c after=a,b sh",
			map[string][]string{"b": {"a"}, "c": {"a", "b"}, "d": {"a", "b", "c"}}, map[string][]string{"d": {"c"}}},
		{"disabled dependency", "a daemon disabled sh\nb daemon needs=a sh",
			map[string][]string{"b": {"a"}}, map[string][]string{"b": {"a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svcs, err := Parse("t.conf", []byte(tt.src), fakeResolver())
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			for _, s := range svcs {
				if !reflect.DeepEqual(s.After, tt.after[s.Name]) {
					t.Errorf("%s: got After %q, want %q", s.Name, s.After, tt.after[s.Name])
				}
				if !reflect.DeepEqual(s.Needs, tt.deps[s.Name]) {
					t.Errorf("%s: got Needs %q, want %q", s.Name, s.Needs, tt.deps[s.Name])
				}
				if !reflect.DeepEqual(s.Deps(), s.After) {
					t.Errorf("%s: got Deps %q, want After %q", s.Name, s.Deps(), s.After)
				}
			}
			checkRoundTrip(t, svcs, fakeResolver())
		})
	}
}

func TestPrintDependencies(t *testing.T) {
	src := "a daemon sh\nb daemon sh\n" +
		"c daemon needs=a after=a sh\n" + // after= says nothing more than needs=
		"d daemon needs=a,b after=b sh\n" + // after= puts b first
		"e daemon after=b,a needs=b sh\n"
	svcs, err := Parse("t.conf", []byte(src), fakeResolver())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "", "b": "", "c": "needs=a", "d": "after=b needs=a,b", "e": "after=b,a needs=b"}
	for _, s := range svcs {
		var b strings.Builder
		if err := Print(&b, []Service{s}); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, w := range strings.Fields(b.String()) {
			if strings.HasPrefix(w, "after=") || strings.HasPrefix(w, "needs=") {
				got = append(got, w)
			}
		}
		if strings.Join(got, " ") != want[s.Name] {
			t.Errorf("%s: got %q, want %q", s.Name, got, want[s.Name])
		}
	}
	checkRoundTrip(t, svcs, fakeResolver())
}

func TestParseDependencyErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"unknown", "a daemon after=b sh", `1:10: unknown service "b" in after (want a service of this config)`},
		{"unknown needs", "a daemon sh\nb daemon needs=a,c sh", `2:10: unknown service "c" in needs (want a service of this config)`},
		{"unknown close", "web daemon sh\napp daemon needs=wbe sh", `2:12: unknown service "wbe" in needs (did you mean "web"?)`},
		{"unknown in both", "a daemon after=b needs=b sh", `1:10: unknown service "b" in after (want a service of this config)`},
		{"self after", "a daemon after=a sh", `1:10: service "a" names itself in after: a service cannot depend on itself`},
		{"self needs", "b daemon sh\na daemon needs=b,a sh", `2:10: service "a" names itself in needs: a service cannot depend on itself`},
		{"two-cycle", "a daemon after=b sh\nb daemon after=a sh", `1:10: dependency cycle: a -> b -> a`},
		{"three-cycle", "# deps\n\n\na daemon after=b sh\nb daemon needs=c sh\nc daemon after=a sh",
			`4:10: dependency cycle: a -> b -> c -> a`},
		{"three-cycle from the first in the file", "c daemon after=a sh\nb daemon needs=c sh\na daemon max=2 after=b sh",
			`1:10: dependency cycle: c -> a -> b -> c`},
		{"cycle through needs", "a daemon after=x needs=b sh\nb daemon after=a sh\nx daemon sh", `1:18: dependency cycle: a -> b -> a`},
		{"two separate cycles", "a daemon after=b sh\nb daemon after=a sh\nc daemon after=d sh\nd daemon needs=c sh",
			"1:10: dependency cycle: a -> b -> a\n" +
				"3:10: dependency cycle: c -> d -> c"},
		{"two cycles through one service", "a daemon after=b sh\nb daemon after=a,c sh\nc daemon after=a sh",
			"1:10: dependency cycle: a -> b -> a\n" +
				"1:10: dependency cycle: a -> b -> c -> a"},
		{"cycles from two options", "a daemon after=b needs=c sh\nb daemon after=a sh\nc daemon after=a sh",
			"1:10: dependency cycle: a -> b -> a\n" +
				"1:18: dependency cycle: a -> c -> a"},
		{"cycle not through the first", "a daemon after=b sh\nb daemon after=c sh\nc daemon after=b sh",
			`2:10: dependency cycle: b -> c -> b`},
		{"cycle and self and unknown", "a daemon after=a,b,z sh\nb daemon after=a sh",
			"1:10: service \"a\" names itself in after: a service cannot depend on itself\n" +
				"1:10: unknown service \"z\" in after (want a service of this config)\n" +
				"1:10: dependency cycle: a -> b -> a"},
		{"cycle on a line with another error", "a daemon max=0 after=b sh\nb daemon after=a sh",
			"1:10: invalid max \"0\": want a whole number from 1 to 1000000\n" +
				"1:16: dependency cycle: a -> b -> a"},
		{"known though its line has an error", "a daemon after=b sh\nb daemon max=0 sh", `2:10: invalid max "0": want a whole number from 1 to 1000000`},
		{"duplicate service's names not looked for", "a daemon sh\na daemon after=zz sh", `2:1: duplicate service "a" (first defined at line 1)`},
		{"bad after makes no edge", "a daemon after=b,,c sh", `1:10: invalid after "b,,c": want NAME[,NAME...], each name made of letters, digits, "_", "-" and "."`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, tt.src, tt.want) })
	}
}

// complete returns a config of n services, each after every other one.
func complete(n int) string {
	var b strings.Builder
	for i := range n {
		var others []string
		for j := range n {
			if j != i {
				others = append(others, fmt.Sprintf("s%d", j))
			}
		}
		fmt.Fprintf(&b, "s%d daemon after=%s sh\n", i, strings.Join(others, ","))
	}
	return b.String()
}

func TestParseDependencyCyclesEachOnce(t *testing.T) {
	// Four services each after the three others: 6 cycles of 2, 8 of 3
	// and 6 of 4, every one reported once.
	_, err := Parse("t.conf", []byte(complete(4)), fakeResolver())
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("got %v, want an ErrorList", err)
	}
	seen := map[string]bool{}
	for _, e := range list {
		if !strings.HasPrefix(e.Msg, "dependency cycle: s") || seen[e.Msg] {
			t.Errorf("got %q, want a cycle reported once", e.Msg)
		}
		seen[e.Msg] = true
	}
	if len(seen) != 20 {
		t.Errorf("got %d cycles, want 20:\n%v", len(seen), err)
	}

	// The same text, the same errors.
	_, again := Parse("t.conf", []byte(complete(4)), fakeResolver())
	if again.Error() != err.Error() {
		t.Errorf("got\n%v\nthen\n%v, want the same errors", err, again)
	}
}

func TestParseDependencyCyclesBounded(t *testing.T) {
	// 24 services each after every other one: more cycles than there are
	// atoms in the universe. The first maxCycles are reported, and that
	// there are more.
	src := complete(24) + "x daemon after=y sh\ny daemon after=x sh\n"
	_, err := Parse("t.conf", []byte(src), fakeResolver())
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("got %v, want an ErrorList", err)
	}
	var cycles, more int
	for _, e := range list {
		switch {
		case strings.HasPrefix(e.Msg, "dependency cycle: "):
			cycles++
		case strings.HasPrefix(e.Msg, "more dependency cycles among s0, s1, s2, "):
			more++
			if !strings.HasSuffix(e.Msg, ", s23: only the first 32 are reported") || e.Line != 1 || e.Col != 11 {
				t.Errorf("got %v, want it at 1:11 naming s0 to s23", e)
			}
		default:
			t.Errorf("got %v, want only cycles", e)
		}
	}
	if cycles != maxCycles+1 || more != 1 {
		t.Errorf("got %d cycles and %d errors about more, want %d and 1 (x -> y -> x too)", cycles, more, maxCycles+1)
	}
	if last := list[len(list)-1]; last.Msg != "dependency cycle: x -> y -> x" {
		t.Errorf("got last error %v, want the cycle of x and y", last)
	}
}

// TestGraphCycles compares the cycles of random graphs with those found
// by trying every path.
func TestGraphCycles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		n := 1 + rng.IntN(7)
		g := make(graph, n)
		for v := range g {
			for w := range n {
				if w != v && rng.IntN(3) == 0 {
					g[v] = append(g[v], arc{to: w})
				}
			}
		}
		var got []string
		more := false
		g.cycles(func(cycle []int) { got = append(got, fmt.Sprint(cycle)) }, func(set, first []int) { more = true })
		want := allCycles(g)
		slices.Sort(got)
		if !more {
			if !slices.Equal(got, want) {
				t.Fatalf("%v: got cycles %v, want %v", g, got, want)
			}
			continue
		}
		// Too many to report: at least maxCycles of them, each once.
		if len(want) <= maxCycles || len(got) < maxCycles || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("%v: got cycles %v and more, want %v", g, got, want)
		}
		for _, c := range got {
			if _, found := slices.BinarySearch(want, c); !found {
				t.Fatalf("%v: got cycle %s, want one of %v", g, c, want)
			}
		}
	}
}

// allCycles returns the elementary cycles of g, each as its nodes from
// its least one, sorted, by trying every path.
func allCycles(g graph) []string {
	var out []string
	var walk func(path []int)
	walk = func(path []int) {
		for _, a := range g[path[len(path)-1]] {
			switch {
			case a.to == path[0] && len(path) > 1:
				out = append(out, fmt.Sprint(path))
			case a.to > path[0] && !slices.Contains(path, a.to):
				walk(append(slices.Clone(path), a.to))
			}
		}
	}
	for v := range g {
		walk([]int{v})
	}
	slices.Sort(out)
	return out
}

func TestParseLine(t *testing.T) {
	s, err := ParseLine("state", []byte("web daemon after=db needs=cache sh\n"), fakeResolver())
	if err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	if want := []string{"db", "cache"}; !reflect.DeepEqual(s.After, want) || s.Name != "web" {
		t.Errorf("got %s after %q, want web after %q", s.Name, s.After, want)
	}

	tests := []struct{ src, want string }{
		{"web daemon after=web sh", `state:1:12: service "web" names itself in after: a service cannot depend on itself`},
		{"web daemon max=0 sh", `state:1:12: invalid max "0": want a whole number from 1 to 1000000`},
		{"a daemon sh\nb daemon sh", "cannot parse state: it holds 2 services, not one"},
		{"# nothing", "cannot parse state: it holds 0 services, not one"},
	}
	for _, tt := range tests {
		_, err := ParseLine("state", []byte(tt.src), fakeResolver())
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseLine(%q): got %v, want %s", tt.src, err, tt.want)
		}
	}
}

// TestCheckDependencies: metad -n reports dependency errors as Parse
// does.
func TestCheckDependencies(t *testing.T) {
	name := filepath.Join(t.TempDir(), "metad.conf")
	src := "# a cycle\n\n\na daemon after=b sh\nb daemon after=c sh\nc daemon after=a,d sh\n"
	if err := os.WriteFile(name, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := Check(name, nil, fakeResolver())
	want := name + ":4:10: dependency cycle: a -> b -> c -> a\n" +
		name + `:6:10: unknown service "d" in after (want a service of this config)`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want\n%s", err, want)
	}
	if _, err := Load(name, fakeResolver()); err == nil || err.Error() != want {
		t.Errorf("Load: got %v, want\n%s", err, want)
	}
}
