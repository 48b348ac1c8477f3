package netctl

import (
	"fmt"
	"runtime"
)

// maxStacks bounds the reply to debug stacks. A metad with thousands of
// goroutines (a stream service per connection) writes a few MiB; the
// rest is cut, and says so. It is well below what metac reads from the
// local socket, even with JSON's escapes.
const maxStacks = 16 << 20

// checkDebug validates the arguments of debug: one topic, stacks.
func checkDebug(args []string) error {
	if args[0] != "stacks" {
		return fmt.Errorf("unknown debug topic %q (topics: stacks)", args[0])
	}
	return nil
}

// stacks returns the stack of every goroutine, as a panic prints them, in
// at most limit bytes. The world stops only for the time it takes to copy
// them.
func stacks(limit int) string {
	for n := min(1<<20, limit); ; n = min(2*n, limit) {
		buf := make([]byte, n)
		m := runtime.Stack(buf, true)
		if m < n {
			return string(buf[:m])
		}
		if n == limit {
			return string(buf[:m]) + fmt.Sprintf("\n... cut at %d bytes\n", limit)
		}
	}
}
