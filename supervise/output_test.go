package supervise

import (
	"fmt"
	"strings"
	"testing"
)

// TestTailKeepsTheLast64KiB: status keeps the newest lines, oldest first,
// never more than tailBytes of them, whatever the lines' lengths.
func TestTailKeepsTheLast64KiB(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  func(got []string) error
	}{
		{"few", []string{"a", "b"}, func(got []string) error {
			if strings.Join(got, ",") != "a,b" {
				return fmt.Errorf("got %q, want a, b", got)
			}
			return nil
		}},
		{"many", manyLines(5000, 100), func(got []string) error {
			if len(got) != tailBytes/100 || got[len(got)-1] != manyLines(5000, 100)[4999] {
				return fmt.Errorf("got %d lines ending %.10q, want %d ending with the last", len(got), got[len(got)-1], tailBytes/100)
			}
			return nil
		}},
		{"one too long", []string{"x", strings.Repeat("y", tailBytes) + "end"}, func(got []string) error {
			if len(got) != 1 || len(got[0]) != tailBytes || !strings.HasSuffix(got[0], "end") {
				return fmt.Errorf("got %d lines, the first of %d bytes, want its last %d bytes", len(got), len(got[0]), tailBytes)
			}
			return nil
		}},
	}
	for _, tt := range tests {
		var tl tail
		for _, l := range tt.lines {
			tl.add(l)
		}
		got := tl.lines()
		size := 0
		for _, l := range got {
			size += len(l)
		}
		if size > tailBytes {
			t.Errorf("%s: keeps %d bytes, more than %d", tt.name, size, tailBytes)
		}
		if err := tt.want(got); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

// manyLines returns n distinct lines of width bytes.
func manyLines(n, width int) []string {
	out := make([]string, n)
	for i := range out {
		s := fmt.Sprintf("line %d ", i)
		out[i] = s + strings.Repeat(".", width-len(s))
	}
	return out
}
