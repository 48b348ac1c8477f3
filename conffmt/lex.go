package conffmt

import (
	"bytes"

	"github.com/kballard/go-shellquote"
)

// A word is one shell word of a config line: its text with quotes and
// escapes removed, and the position of its first byte in the file.
type word struct {
	text string
	pos  Pos
}

// A scanner finds the words of config text and where each one starts.
//
// shellquote can unquote a word but reports no positions, so the scanner
// does the part that needs them: it walks the bytes with the same quoting
// rules as shellquote.Split, marks where each word begins and ends, and
// hands each word's raw text to shellquote to unquote. The rules:
//
//   - space, tab and newline separate words; a newline also ends the line;
//   - an unquoted '#' at the start of a word starts a comment that runs to
//     the end of the physical line (a backslash in a comment is text);
//   - a backslash outside quotes escapes the next byte; a backslash before
//     a newline, outside single quotes, joins the next physical line to
//     this one; a backslash at the very end of the file is dropped;
//   - single quotes keep everything up to the next single quote;
//   - double quotes keep everything up to the next unescaped double quote,
//     a backslash escaping only $ ` " \ and newline;
//   - a quote left open at the end of its physical line is an error at the
//     quote: quoted text never spans lines except through a backslash
//     continuation inside double quotes;
//   - a NUL byte in a word is an error (no program can receive it).
type scanner struct {
	src       []byte
	off       int // next byte to read
	line      int // line of src[off], from 1
	lineStart int // offset of the first byte of that line
	errorf    func(pos Pos, format string, args ...any)
}

// scanLines returns the logical lines of src that hold at least one word,
// in order. It reports each scanning error through errorf, at most one per
// logical line, and leaves a line with an error out of the result.
func scanLines(src []byte, errorf func(Pos, string, ...any)) [][]word {
	s := &scanner{src: src, line: 1, errorf: errorf}
	var lines [][]word
	var words []word
	bad := false
	endLine := func() {
		if len(words) > 0 && !bad {
			lines = append(lines, words)
		}
		words, bad = nil, false
	}
	for s.off < len(s.src) {
		switch c := s.src[s.off]; {
		case c == ' ' || c == '\t':
			s.off++
		case c == '\n':
			endLine()
			s.newline(s.off + 1)
		case c == '\\' && s.off+1 < len(s.src) && s.src[s.off+1] == '\n':
			s.newline(s.off + 2)
		case c == '\\' && s.off+1 == len(s.src):
			s.off++
		case c == '#':
			if i := bytes.IndexByte(s.src[s.off:], '\n'); i >= 0 {
				s.off += i
			} else {
				s.off = len(s.src)
			}
		default:
			w, ok := s.word(!bad)
			if !ok {
				bad = true
				continue
			}
			words = append(words, w)
		}
	}
	endLine()
	return lines
}

// newline records that a physical line starts at off and moves there.
func (s *scanner) newline(off int) {
	s.off = off
	s.line++
	s.lineStart = off
}

// pos returns the position of off, which must be on the current line.
func (s *scanner) pos(off int) Pos {
	return Pos{Line: s.line, Col: off - s.lineStart + 1}
}

// word scans one word starting at s.off, which holds no separator. It
// returns false after an error, which it reports only when report is true;
// s.off is then past the bad byte, or at the end of the physical line for
// an open quote, so that scanning can go on.
func (s *scanner) word(report bool) (word, bool) {
	start, pos := s.off, s.pos(s.off)
	end := -1 // end of the raw text when it is not s.off (a dropped final backslash)
	fail := func(at Pos, msg string) (word, bool) {
		if report {
			s.errorf(at, "%s", msg)
		}
		return word{}, false
	}
scan:
	for s.off < len(s.src) {
		switch c := s.src[s.off]; c {
		case ' ', '\t', '\n':
			break scan
		case 0:
			at := s.pos(s.off)
			s.off++
			return fail(at, "NUL byte in word")
		case '\\':
			switch {
			case s.off+1 == len(s.src):
				end = s.off
				s.off++
			case s.src[s.off+1] == '\n':
				s.newline(s.off + 2)
			case s.src[s.off+1] == 0:
				at := s.pos(s.off + 1)
				s.off += 2
				return fail(at, "NUL byte in word")
			default:
				s.off += 2
			}
		case '\'', '"':
			if at, msg := s.quoted(c); msg != "" {
				return fail(at, msg)
			}
		default:
			s.off++
		}
	}
	if end < 0 {
		end = s.off
	}
	ws, err := shellquote.Split(string(s.src[start:end]))
	if err != nil || len(ws) != 1 {
		// The scanner and shellquote disagree on the word's extent; say so
		// rather than guess.
		return fail(pos, "cannot split word: quoting not understood")
	}
	return word{text: ws[0], pos: pos}, true
}

// quoted scans a quoted part of a word, s.off being at its opening quote q,
// and leaves s.off just past the closing quote. On error it returns the
// position and the message.
func (s *scanner) quoted(q byte) (Pos, string) {
	open := s.pos(s.off)
	name := "single"
	if q == '"' {
		name = "double"
	}
	s.off++
	for s.off < len(s.src) {
		switch c := s.src[s.off]; {
		case c == q:
			s.off++
			return Pos{}, ""
		case c == '\n':
			return open, "unterminated " + name + " quote"
		case c == 0:
			at := s.pos(s.off)
			s.off++
			return at, "NUL byte in word"
		case c == '\\' && q == '"' && s.off+1 < len(s.src):
			switch s.src[s.off+1] {
			case '\n':
				s.newline(s.off + 2)
			case 0:
				at := s.pos(s.off + 1)
				s.off += 2
				return at, "NUL byte in word"
			default:
				s.off += 2
			}
		default:
			s.off++
		}
	}
	return open, "unterminated " + name + " quote"
}
