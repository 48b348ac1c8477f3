package metac

import "strings"

// suggest returns the candidate closest to word, ignoring case, when it
// is close enough to be a likely typo (at most two edits, fewer than the
// word has letters); else "". The edits are those of the config parser's
// suggestions, and a swap of two neighbours counts as one: "lsit" is
// "list" mistyped.
func suggest(word string, candidates []string) string {
	if len(word) > 32 {
		return ""
	}
	word = strings.ToLower(word)
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := typoDistance(word, c); d < bestDist && d < len(word) {
			best, bestDist = c, d
		}
	}
	return best
}

// typoDistance returns how many edits turn a into b, in bytes: inserting,
// deleting or replacing one, or swapping two neighbours (the optimal
// string alignment distance).
func typoDistance(a, b string) int {
	// d[i][j] is the distance between a[:i] and b[:j].
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
