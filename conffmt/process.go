package conffmt

// Parsing and printing of the process settings: limit=, umask= and nice=.

import (
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// unit is what the number of a resource limit counts.
type unit int

const (
	unitCount   unit = iota // descriptors, processes: a plain number
	unitBytes               // a number with an optional K, M, G or T suffix (powers of 1024)
	unitSeconds             // CPU seconds: whole seconds or a DUR of whole seconds
)

// A resource is one entry of the limits table.
type resource struct {
	name     string // as written in limit=NAME=...
	resource int    // setrlimit(2)'s RLIMIT_*
	unit     unit
}

// resources is the limits table, in the order Print writes limits (and
// Service.Limits keeps them). It is never written to.
var resources = [...]resource{
	{"nofile", unix.RLIMIT_NOFILE, unitCount},
	{"nproc", unix.RLIMIT_NPROC, unitCount},
	{"core", unix.RLIMIT_CORE, unitBytes},
	{"memlock", unix.RLIMIT_MEMLOCK, unitBytes},
	{"stack", unix.RLIMIT_STACK, unitBytes},
	{"as", unix.RLIMIT_AS, unitBytes},
	{"cpu", unix.RLIMIT_CPU, unitSeconds},
	{"fsize", unix.RLIMIT_FSIZE, unitBytes},
}

// resourceOf returns the table entry of the RLIMIT_* number n, or nil.
func resourceOf(n int) *resource {
	for i := range resources {
		if resources[i].resource == n {
			return &resources[i]
		}
	}
	return nil
}

// maxLimit is the largest number a finite limit may be: larger ones are
// more than any machine has, and a typo more likely than a wish.
const maxLimit = math.MaxInt64

// sizeSuffixes are the suffixes of byte limits, each 1024 times the last.
const sizeSuffixes = "KMGT"

// addLimit parses val, NAME=SOFT[:HARD], and adds the limit to s, in
// table order. A lone SOFT sets both limits, as systemd's LimitNAME= does.
func addLimit(s *Service, val string) error {
	name, values, ok := strings.Cut(val, "=")
	if !ok {
		return fmt.Errorf("invalid limit %q: want NAME=SOFT or NAME=SOFT:HARD", val)
	}
	var r *resource
	for i := range resources {
		if resources[i].name == name {
			r = &resources[i]
		}
	}
	if r == nil {
		names := make([]string, len(resources))
		for i := range resources {
			names[i] = resources[i].name
		}
		if sug := suggest(name, names); sug != "" {
			return fmt.Errorf("unknown limit %q (did you mean %q?)", name, sug)
		}
		return fmt.Errorf("unknown limit %q (want one of %s)", name, strings.Join(names, ", "))
	}
	soft, hard, twoValues := strings.Cut(values, ":")
	l := Limit{Resource: r.resource}
	var err error
	if l.Soft, err = r.parse(soft); err != nil {
		return fmt.Errorf("invalid limit %q: %w", val, err)
	}
	l.Hard = l.Soft
	if twoValues {
		if l.Hard, err = r.parse(hard); err != nil {
			return fmt.Errorf("invalid limit %q: %w", val, err)
		}
	}
	if l.Soft > l.Hard {
		return fmt.Errorf("invalid limit %q: the soft limit is above the hard limit", val)
	}
	i, found := slices.BinarySearchFunc(s.Limits, r, func(l Limit, r *resource) int {
		return resourceIndex(l.Resource) - resourceIndex(r.resource)
	})
	if found {
		return fmt.Errorf("duplicate limit %q (give each resource once)", name)
	}
	s.Limits = slices.Insert(s.Limits, i, l)
	return nil
}

// resourceIndex returns the place of the RLIMIT_* number n in the table.
func resourceIndex(n int) int {
	return slices.IndexFunc(resources[:], func(r resource) bool { return r.resource == n })
}

// parse parses one value of a limit of r.
func (r *resource) parse(val string) (uint64, error) {
	if val == "infinity" || val == "unlimited" {
		return Unlimited, nil
	}
	switch r.unit {
	case unitBytes:
		mult := uint64(1)
		if val != "" {
			if i := strings.IndexByte(sizeSuffixes, upper(val[len(val)-1])); i >= 0 {
				val, mult = val[:len(val)-1], 1<<(10*(i+1))
			}
		}
		n, ok := parseLimit(val)
		if !ok || n > maxLimit/mult {
			return 0, fmt.Errorf("want a number of bytes up to 2^63-1, with an optional K, M, G or T suffix, or infinity")
		}
		return n * mult, nil
	case unitSeconds:
		d, err := ParseDuration(val)
		if err != nil || d%time.Second != 0 {
			return 0, fmt.Errorf("want whole seconds (3600, 1h) or infinity")
		}
		return uint64(d / time.Second), nil
	default:
		n, ok := parseLimit(val)
		if !ok {
			return 0, fmt.Errorf("want a whole number up to 2^63-1, or infinity")
		}
		return n, nil
	}
}

// parseLimit parses decimal digits, no sign, up to maxLimit.
func parseLimit(val string) (uint64, bool) {
	n, err := strconv.ParseUint(val, 10, 64)
	return n, err == nil && n <= maxLimit
}

// upper returns c in upper case if it is a letter.
func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		c -= 'a' - 'A'
	}
	return c
}

// format returns a value of a limit of r as Print writes it: infinity,
// bytes with the largest suffix that keeps them whole, other numbers in
// decimal.
func (r *resource) format(v uint64) string {
	if v == Unlimited {
		return "infinity"
	}
	if r.unit == unitBytes && v != 0 {
		suffix := ""
		for i := 0; i < len(sizeSuffixes) && v%1024 == 0; i++ {
			v, suffix = v/1024, sizeSuffixes[i:i+1]
		}
		return strconv.FormatUint(v, 10) + suffix
	}
	return strconv.FormatUint(v, 10)
}

// formatLimits returns the limit= values of ls: NAME=SOFT, or
// NAME=SOFT:HARD when they differ.
func formatLimits(ls []Limit) []string {
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		r := resourceOf(l.Resource)
		if r == nil {
			continue // not from Parse; nothing to write it as
		}
		v := r.name + "=" + r.format(l.Soft)
		if l.Hard != l.Soft {
			v += ":" + r.format(l.Hard)
		}
		out = append(out, v)
	}
	return out
}

// parseUmask parses umask=OCTAL: one to four octal digits, at most 0777.
func parseUmask(val string) (*fs.FileMode, error) {
	n, err := strconv.ParseUint(val, 8, 32)
	if err != nil || len(val) > 4 || n > 0o777 {
		return nil, fmt.Errorf("invalid umask %q: want an octal mask from 0000 to 0777", val)
	}
	m := fs.FileMode(n)
	return &m, nil
}

// formatUmask writes a umask as four octal digits: 0022.
func formatUmask(m fs.FileMode) string { return fmt.Sprintf("%04o", uint32(m)) }

// parseNice parses nice=N: a whole number from -20 (most favourable) to
// 19, with an optional sign.
func parseNice(val string) (*int, error) {
	digits := strings.TrimPrefix(strings.TrimPrefix(val, "+"), "-")
	n, ok := parseDigits(digits, 20)
	if ok && len(digits) < len(val)-1 {
		ok = false // more than one sign
	}
	if ok && strings.HasPrefix(val, "-") {
		n = -n
	}
	if !ok || n < -20 || n > 19 {
		return nil, fmt.Errorf("invalid nice %q: want a whole number from -20 to 19", val)
	}
	v := int(n)
	return &v, nil
}
