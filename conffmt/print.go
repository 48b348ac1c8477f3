package conffmt

import (
	"fmt"
	"io"
	"strings"

	"github.com/kballard/go-shellquote"
)

// Print writes svcs to w as canonical config text: one line per service,
// NAME CLASS, then every option of the class as key=value with its value
// or default, in a fixed order (the order of the options table, which the
// docs list), then PROGRAM as written and its ARGs. Options with nothing
// to say are left out: user, pidfile, addr, umask, nice, stop_timeout,
// watchdog, quiet, per_source, rate and only_from when unset, env,
// env_file, limit, after and needs when empty, check's options when there
// is no check. after= leaves out the names that needs= adds to After
// anyway. ready= and check= are written as they were given, port names
// included. Words are quoted like a shell would need them.
//
// For services that Parse returned, parsing the output with the same
// Resolver gives equal services, Pos aside. Print refuses, with an error
// and before writing anything, a service that no config line can express:
// a word with a newline or a NUL byte, a bad name or class, or a program
// that would read as an option. It makes one Write call per service.
func Print(w io.Writer, svcs []Service) error {
	lines := make([]string, 0, len(svcs))
	for i := range svcs {
		line, err := format(&svcs[i])
		if err != nil {
			return fmt.Errorf("cannot print service %q: %w", svcs[i].Name, err)
		}
		lines = append(lines, line)
	}
	for _, line := range lines {
		if _, err := io.WriteString(w, line); err != nil {
			return fmt.Errorf("cannot write config: %w", err)
		}
	}
	return nil
}

// format returns the canonical config line of s, newline included.
func format(s *Service) (string, error) {
	if !validName(s.Name) {
		return "", fmt.Errorf("invalid name")
	}
	if s.Class < Daemon || s.Class > Stream {
		return "", fmt.Errorf("invalid class %s", s.Class)
	}
	if kind, _, _ := classify(s.Program); kind != programWord || s.Program == "" {
		return "", fmt.Errorf("program %q would not read as a program", s.Program)
	}
	words := []string{s.Name, s.Class.String()}
	for _, o := range options {
		if !o.classes.has(s.Class) {
			continue
		}
		for _, v := range o.print(s) {
			words = append(words, o.key+"="+v)
		}
	}
	words = append(words, s.Program)
	words = append(words, s.Args...)
	var b strings.Builder
	for i, word := range words {
		if strings.ContainsAny(word, "\n\x00") {
			return "", fmt.Errorf("word %q holds a newline or a NUL byte", word)
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(quote(word))
	}
	b.WriteByte('\n')
	return b.String(), nil
}

// quote returns word as a shell would need it written. shellquote leaves
// a leading '#' alone, which here would start a comment.
func quote(word string) string {
	q := shellquote.Join(word)
	if strings.HasPrefix(q, "#") {
		return `\` + q
	}
	return q
}
