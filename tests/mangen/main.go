// Command mangen turns the markdown manual pages of docs/ into roff for
// man(1): go run ./tests/mangen -o docs/man docs/metad.8.md ...
//
// It knows the markdown those pages use and nothing more: a "# name(N)"
// title, "##" and "###" headings, paragraphs, "-" and "1." lists (with
// indented continuation lines; "- `term` — text" for options), fenced
// code blocks, tables, and inline `code`, **bold**, *italic* and
// [links](target). What it does not know it writes as text. The output is
// plain man(7) with tbl(1) tables, which groff and mandoc render.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"
)

func main() {
	out := flag.String("o", ".", "output `DIR`")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: mangen [-o DIR] PAGE.N.md...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	for _, src := range flag.Args() {
		if err := convert(src, *out); err != nil {
			fmt.Fprintf(os.Stderr, "mangen: %v\n", err)
			os.Exit(1)
		}
	}
}

// convert writes the roff of the markdown page src into dir, named after
// src without ".md" (docs/metad.8.md → DIR/metad.8).
func convert(src, dir string) error {
	text, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("cannot read page: %w", err)
	}
	roff, err := render(string(text))
	if err != nil {
		return fmt.Errorf("cannot convert %q: %w", src, err)
	}
	dst := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".md"))
	if err := os.WriteFile(dst, []byte(roff), 0o644); err != nil {
		return fmt.Errorf("cannot write page: %w", err)
	}
	return nil
}

var titleRE = regexp.MustCompile(`^# ([A-Za-z0-9_.-]+)\(([0-9])\)\s*$`)

// render converts one page.
func render(text string) (string, error) {
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	m := titleRE.FindStringSubmatch(lines[0])
	if m == nil {
		return "", fmt.Errorf("first line %q is not a title like \"# name(8)\"", lines[0])
	}
	w := &writer{}
	w.line(`'\" t`) // tells man(1) to run tbl(1)
	w.line(fmt.Sprintf(`.TH %s %s "" "metad" "%s"`, strings.ToUpper(m[1]), m[2], manual(m[2])))
	p := &parser{w: w, lines: lines[1:]}
	p.blocks()
	return w.String(), nil
}

// manual is the title of a man(1) section.
func manual(section string) string {
	switch section {
	case "1":
		return "User Commands"
	case "5":
		return "File Formats"
	case "8":
		return "System Administration"
	default:
		return "metad"
	}
}

// writer collects roff lines.
type writer struct{ strings.Builder }

// line writes one line of roff as it is.
func (w *writer) line(s string) { w.WriteString(s + "\n") }

// text writes markdown text, converted, as filled roff text lines.
func (w *writer) text(s string) {
	for _, l := range strings.Split(inline(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			w.line(safeStart(l))
		}
	}
}

// safeStart keeps a text line from being read as a request.
func safeStart(l string) string {
	if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
		return `\&` + l
	}
	return l
}

// parser walks the lines of a page, block by block.
type parser struct {
	w       *writer
	lines   []string
	i       int
	section string // the current "##" heading
}

func (p *parser) more() bool   { return p.i < len(p.lines) }
func (p *parser) peek() string { return p.lines[p.i] }

var (
	bulletRE = regexp.MustCompile(`^(\s*)[-*] (.*)$`)
	numberRE = regexp.MustCompile(`^(\s*)([0-9]+)\. (.*)$`)
	termRE   = regexp.MustCompile("^((?:`[^`]+`(?:, )?)+) — (.*)$")
)

func (p *parser) blocks() {
	for p.more() {
		l := p.peek()
		trimmed := strings.TrimSpace(l)
		switch {
		case trimmed == "":
			p.i++
		case strings.HasPrefix(l, "### "):
			p.w.line(".SS " + quoteArg(inline(strings.TrimPrefix(l, "### "))))
			p.i++
		case strings.HasPrefix(l, "## "):
			p.section = strings.TrimSpace(strings.TrimPrefix(l, "## "))
			p.w.line(".SH " + quoteArg(inline(p.section)))
			p.i++
		case strings.HasPrefix(trimmed, "```"):
			p.w.line(".PP")
			p.code()
		case strings.HasPrefix(trimmed, "|"):
			p.table()
		case isItem(l):
			p.list()
		default:
			p.paragraph()
		}
	}
}

// paragraph reads lines up to a blank line or the start of another block.
func (p *parser) paragraph() {
	var text []string
	for p.more() {
		l := p.peek()
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(t, "```") || strings.HasPrefix(t, "|") ||
			(len(text) > 0 && isItem(l)) {
			break
		}
		text = append(text, t)
		p.i++
	}
	s := strings.Join(text, "\n")
	if p.section == "NAME" {
		s = strings.Replace(s, " — ", ` \- `, 1) // whatis(1) wants "name \- what"
	}
	p.w.line(".PP")
	p.w.text(s)
}

// code writes a fenced code block, keeping its lines as they are, less
// the fence's indentation.
func (p *parser) code() {
	fence := p.peek()
	indent := len(fence) - len(strings.TrimLeft(fence, " "))
	p.i++
	p.w.line(".RS 4")
	p.w.line(".nf")
	for p.more() {
		l := p.peek()
		p.i++
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			break
		}
		if len(l) >= indent && strings.TrimSpace(l[:indent]) == "" {
			l = l[indent:]
		}
		p.w.line(safeStart(escape(l)))
	}
	p.w.line(".fi")
	p.w.line(".RE")
}

// list writes a list, each item as a tagged paragraph. An item that
// starts with code spans and a dash ("- `-f FILE` — text") is a term and
// its description, as man pages list options. Nested lists are flattened.
func (p *parser) list() {
	for p.more() {
		tag, first, ok := item(p.peek())
		if !ok {
			return
		}
		p.i++
		if m := termRE.FindStringSubmatch(first); m != nil && tag == `\(bu` {
			p.w.line(".TP") // "- `-f FILE` — text": a term and its description
			p.w.line(safeStart(inline(m[1])))
			first = m[2]
		} else {
			p.w.line(".IP " + tag + " 4")
		}
		p.itemBody(first)
		// The list goes on when the next line that is not blank is an item.
		j := p.next(p.i)
		if !isItem(p.lineAt(j)) {
			return
		}
		p.i = j
	}
}

// itemBody writes the text of a list item: its first line, the lines that
// follow it, and after a blank line, indented paragraphs and code.
func (p *parser) itemBody(first string) {
	text := []string{first}
	flush := func() {
		if len(text) > 0 {
			p.w.text(strings.Join(text, "\n"))
			text = nil
		}
	}
	defer flush()
	for p.more() {
		l := p.peek()
		t := strings.TrimSpace(l)
		switch {
		case isItem(l):
			return
		case t == "":
			j := p.next(p.i)
			if isItem(p.lineAt(j)) || !strings.HasPrefix(p.lineAt(j), "  ") {
				return
			}
			flush()
			p.w.line(".sp")
			p.i = j
		case strings.HasPrefix(t, "```"):
			flush()
			p.code()
		case !strings.HasPrefix(l, " ") && (strings.HasPrefix(l, "#") || strings.HasPrefix(l, "|")):
			return
		default:
			text = append(text, t)
			p.i++
		}
	}
}

// isItem reports whether l starts a list item.
func isItem(l string) bool {
	_, _, ok := item(l)
	return ok
}

// item returns the tag and text of a list item line.
func item(l string) (tag, text string, ok bool) {
	if m := bulletRE.FindStringSubmatch(l); m != nil {
		return `\(bu`, m[2], true
	}
	if m := numberRE.FindStringSubmatch(l); m != nil {
		return m[2] + ".", m[3], true
	}
	return "", "", false
}

// next returns the index of the first line from i that is not blank.
func (p *parser) next(i int) int {
	for i < len(p.lines) && strings.TrimSpace(p.lines[i]) == "" {
		i++
	}
	return i
}

// lineAt returns line i, or "" past the end.
func (p *parser) lineAt(i int) string {
	if i < len(p.lines) {
		return p.lines[i]
	}
	return ""
}

// table writes a markdown table as a tbl(1) table with a bold header.
func (p *parser) table() {
	var rows [][]string
	for p.more() && strings.HasPrefix(strings.TrimSpace(p.peek()), "|") {
		row := splitRow(strings.TrimSpace(p.peek()))
		p.i++
		if isRule(row) {
			continue
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return
	}
	n := len(rows[0])
	// A column whose longest word would not fit in an equal share of an
	// 80-column terminal is as wide as that word; the others share the
	// rest of the line.
	formats := make([]string, n)
	for i := range formats {
		widest := 1
		for _, row := range rows {
			if i < len(row) {
				for _, word := range strings.Fields(plain(row[i])) {
					widest = max(widest, utf8.RuneCountInString(word))
				}
			}
		}
		formats[i] = "lx"
		if widest > (80-7)/n-3 {
			formats[i] = fmt.Sprintf("lw(%dn)", widest)
		}
	}
	p.w.line(".PP")
	p.w.line(".ad l") // ragged right, and no hyphens, in narrow cells
	p.w.line(".nh")
	p.w.line(".TS")
	p.w.line("allbox tab(@);")
	p.w.line(strings.ReplaceAll(strings.Join(formats, " "), "l", "lb")) // the header, in bold
	p.w.line(strings.Join(formats, " ") + ".")
	for _, row := range rows {
		cells := make([]string, n)
		for i := range cells {
			cell := ""
			if i < len(row) {
				cell = row[i]
			}
			if cell = safeStart(strings.ReplaceAll(inline(cell), "@", `\(at`)); cell == "" {
				cell = `\&` // an empty text block would be an empty line
			}
			cells[i] = "T{\n" + cell + "\nT}"
		}
		p.w.line(strings.Join(cells, "@"))
	}
	p.w.line(".TE")
	p.w.line(".ad")
	p.w.line(".hy")
	p.w.line(".sp")
}

// splitRow splits "| a | b |" into its cells. A "|" inside a code span
// or after a backslash belongs to the cell.
func splitRow(l string) []string {
	l = strings.TrimSuffix(strings.TrimPrefix(l, "|"), "|")
	var cells []string
	var cell strings.Builder
	inCode := false
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c == '\\' && i+1 < len(l) && l[i+1] == '|':
			cell.WriteByte('|')
			i++
		case c == '`':
			inCode = !inCode
			cell.WriteByte(c)
		case c == '|' && !inCode:
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(c)
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

// isRule reports whether a table row is the "|---|---|" under the header.
func isRule(row []string) bool {
	for _, c := range row {
		if strings.Trim(c, "-: ") != "" {
			return false
		}
	}
	return true
}

// plain returns markdown text without its inline markup.
func plain(s string) string {
	return strings.NewReplacer("`", "", "**", "", "*", "").Replace(s)
}

// quoteArg quotes a macro argument.
func quoteArg(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `\(dq`) + `"`
}

var linkRE = regexp.MustCompile(`\[([^\]]+)\]\(([^)]+)\)`)

// inline converts the inline markup of markdown text to roff: `code` and
// **bold** in bold, *italic* in italics, links as their text (and the
// address, when it is a URL), and escapes what roff would read.
func inline(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		switch {
		case s[0] == '`':
			n := len(s) - len(strings.TrimLeft(s, "`"))
			end := strings.Index(s[n:], s[:n])
			if end < 0 {
				b.WriteString(escape(s[:n]))
				s = s[n:]
				continue
			}
			code := s[n : n+end]
			if len(code) > 1 && code[0] == ' ' && code[len(code)-1] == ' ' {
				code = code[1 : len(code)-1]
			}
			b.WriteString(`\fB` + escape(code) + `\fR`)
			s = s[n+end+n:]
		case strings.HasPrefix(s, "**"):
			s = emphasis(&b, s, "**", `\fB`)
		case s[0] == '*' && len(s) > 1 && s[1] != ' ':
			s = emphasis(&b, s, "*", `\fI`)
		case s[0] == '[':
			m := linkRE.FindStringSubmatchIndex(s)
			if m == nil || m[0] != 0 {
				b.WriteString(escape("["))
				s = s[1:]
				continue
			}
			text, target := s[m[2]:m[3]], s[m[4]:m[5]]
			b.WriteString(inline(text))
			if strings.Contains(target, "://") {
				b.WriteString(` <` + escape(target) + `>`)
			}
			s = s[m[1]:]
		case s[0] == '\\' && len(s) > 1 && strings.ContainsRune("\\`*_{}[]()#+-.!|<>", rune(s[1])):
			b.WriteString(escape(s[1:2])) // a markdown escape
			s = s[2:]
		default:
			_, n := utf8.DecodeRuneInString(s)
			b.WriteString(escape(s[:n]))
			s = s[n:]
		}
	}
	return b.String()
}

// emphasis writes the text of s between delim and the next delim in font
// and returns what follows it. Without a closing delim, delim is text.
func emphasis(b *strings.Builder, s, delim, font string) string {
	n := len(delim)
	end := strings.Index(s[n:], delim)
	if end < 0 {
		b.WriteString(escape(delim))
		return s[n:]
	}
	b.WriteString(font + inline(s[n:n+end]) + `\fR`)
	return s[n+end+n:]
}

// escape makes text literal for roff: backslashes, minus signs (so that
// options can be copied), and every character beyond ASCII as \[uXXXX].
func escape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r == '\'' || r == '`':
			b.WriteString(map[rune]string{'\'': `\(aq`, '`': `\(ga`}[r])
		case r == '\t':
			b.WriteRune(r)
		case r > 127:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
