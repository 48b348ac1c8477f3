package conffmt

// Environment files: env_file=PATH.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
)

// MaxEnvFile is the largest environment file ReadEnvFile reads, in bytes:
// far more than any set of variables needs, and a bound on what a wrong
// path (a log file, a device) can cost each start.
const MaxEnvFile = 1 << 20

// ReadEnvFiles reads files in order, as a start of the program does, and
// returns their variables, NAME=VALUE, in order: when a NAME is set more
// than once, the last one is meant to win. An Optional file that does not
// exist is skipped. The error is that of ReadEnvFile for the first file
// that failed. It may block as long as the file system does.
func ReadEnvFiles(files []EnvFile) ([]string, error) {
	var env []string
	for _, f := range files {
		vars, err := ReadEnvFile(f.Path)
		if f.Optional && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		env = append(env, vars...)
	}
	return env, nil
}

// ReadEnvFile reads the environment file path and parses it with
// ParseEnvFile. The file must be a regular file of at most MaxEnvFile
// bytes; it is opened without blocking, so a FIFO named by mistake is
// refused instead of waited on. A file that does not exist gives an
// error that wraps fs.ErrNotExist.
func ReadEnvFile(path string) ([]string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot read env file %q: %w", path, unwrapPath(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read env file %q: %w", path, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cannot read env file %q: not a regular file", path)
	}
	src, err := io.ReadAll(io.LimitReader(f, MaxEnvFile+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read env file %q: %w", path, unwrapPath(err))
	}
	if len(src) > MaxEnvFile {
		return nil, fmt.Errorf("cannot read env file %q: larger than %d bytes", path, MaxEnvFile)
	}
	return ParseEnvFile(path, src)
}

// unwrapPath returns the error inside a *fs.PathError, whose text would
// repeat the path that the caller's message names already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// ParseEnvFile parses the text of an environment file, which came from
// the file filename (used only in errors), and returns its variables,
// NAME=VALUE, in file order. It reads the common part of systemd's
// EnvironmentFile= and docker's --env-file:
//
//   - Lines end with a newline. Blanks are spaces, tabs and carriage
//     returns, so a file with DOS line endings reads as expected.
//   - A line that is blank, or whose first non-blank byte is '#' or ';',
//     is ignored.
//   - Any other line is NAME=VALUE, blanks allowed before NAME and around
//     the '='. NAME is made of letters, digits and '_' and does not start
//     with a digit.
//   - VALUE without quotes is the rest of the line, blanks at both ends
//     removed; every other byte is kept as it is, '#', quotes and
//     backslashes included.
//   - VALUE in single quotes is the text up to the next single quote, as
//     it is. VALUE in double quotes is the text up to the next double
//     quote that no backslash escapes; a backslash before '"', '\', '$'
//     or '`' is removed, before any other byte it stays. Only blanks may
//     follow the closing quote, and the quotes must close on their line.
//   - Nothing is expanded: $HOME is five bytes.
//   - A NUL byte is an error.
//
// Unlike systemd, a line never continues on the next one. When the text
// has any problem, ParseEnvFile returns no variables and an ErrorList of
// every problem, one per line at most, each at its line and column (in
// bytes, from 1). It never panics.
func ParseEnvFile(filename string, src []byte) ([]string, error) {
	var env []string
	var errs ErrorList
	for n, line := range strings.Split(string(src), "\n") {
		kv, col, msg := parseEnvLine(line)
		switch {
		case msg != "":
			errs = append(errs, &Error{File: filename, Line: n + 1, Col: col, Msg: msg})
		case kv != "":
			env = append(env, kv)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return env, nil
}

// envBlanks are the bytes that surround names and values in an env file.
const envBlanks = " \t\r"

// parseEnvLine parses one line of an environment file. It returns the
// variable, or "" for a blank or comment line; or, for a bad line, the
// column (from 1) and the message of its problem.
func parseEnvLine(line string) (kv string, col int, msg string) {
	if i := strings.IndexByte(line, 0); i >= 0 {
		return "", i + 1, "NUL byte in line"
	}
	start := len(line) - len(strings.TrimLeft(line, envBlanks))
	rest := line[start:]
	if rest == "" || rest[0] == '#' || rest[0] == ';' {
		return "", 0, ""
	}
	name, val, ok := strings.Cut(rest, "=")
	name = strings.TrimRight(name, envBlanks)
	switch {
	case !ok:
		return "", start + 1, fmt.Sprintf("want NAME=VALUE, not %q", rest)
	case strings.HasPrefix(name, "export") && len(name) > 6 && strings.IndexByte(envBlanks, name[6]) >= 0:
		return "", start + 1, fmt.Sprintf("invalid name %q: write NAME=VALUE without export", name)
	case !validEnvName(name):
		return "", start + 1, fmt.Sprintf("invalid name %q: use letters, digits and _, not starting with a digit", name)
	}
	valCol := len(line) - len(val) // where val starts, from 0
	trimmed := strings.TrimLeft(val, envBlanks)
	valCol += len(val) - len(trimmed)
	val = strings.TrimRight(trimmed, envBlanks)
	if val == "" || (val[0] != '"' && val[0] != '\'') {
		return name + "=" + val, 0, ""
	}
	value, end, ok := unquoteEnv(val)
	switch {
	case !ok && val[0] == '"':
		return "", valCol + 1, "unterminated double quote"
	case !ok:
		return "", valCol + 1, "unterminated single quote"
	case end < len(val):
		extra := len(val) - len(strings.TrimLeft(val[end:], envBlanks))
		return "", valCol + extra + 1, "text after the closing quote (quote the whole value)"
	}
	return name + "=" + value, 0, ""
}

// unquoteEnv reads the quoted value at the start of s, which starts with
// a quote, and returns it without its quotes and escapes, and the offset
// just after the closing quote; ok is false when the quote is not closed.
func unquoteEnv(s string) (value string, end int, ok bool) {
	q := s[0]
	if q == '\'' {
		i := strings.IndexByte(s[1:], '\'')
		if i < 0 {
			return "", 0, false
		}
		return s[1 : 1+i], i + 2, true
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return b.String(), i + 1, true
		case c == '\\' && i+1 < len(s) && slices.Contains([]byte{'"', '\\', '$', '`'}, s[i+1]):
			b.WriteByte(s[i+1])
			i++
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, false
}
