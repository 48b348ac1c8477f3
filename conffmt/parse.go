package conffmt

import (
	"cmp"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// Error is one problem in a config file, at the line and column (in
// bytes, from 1) of the word it is about.
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

// Error returns "FILE:LINE:COL: Msg", or "LINE:COL: Msg" when File is "".
func (e *Error) Error() string {
	if e.File == "" {
		return fmt.Sprintf("%d:%d: %s", e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// ErrorList is every problem found in one config file, in file order.
type ErrorList []*Error

// Error returns the errors one per line, with no final newline.
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Load reads the config file filename and parses it with Parse.
func Load(filename string, r *Resolver) ([]Service, error) {
	svcs, _, err := load(filename, &parser{file: filename, res: r})
	return svcs, err
}

// Identity is who metad runs as: its effective user and group ids.
type Identity struct {
	UID, GID int
}

// Check reads the config file filename and parses it with Parse, and
// also returns its warnings, in file order: the lines that load but that
// a metad running as id cannot carry out. Today that is a user= option
// that needs root (another user, or another group, than id's) when id is
// not root: the service would fail at every start. Lines with errors are
// warned about too. A nil id means no warnings.
//
// Warnings are Errors whose Msg starts with "warning: "; they never make
// err non-nil.
//
// Check also reads what a start would read, and reports its problems as
// errors at the option that names it: an env_file= that does not exist
// (unless written -PATH), cannot be read, or has errors of its own, each
// given as "env_file FILE:LINE:COL: message". Load and Parse do not, since
// a start reads them again: such a file may appear later.
func Check(filename string, id *Identity, r *Resolver) (svcs []Service, warnings ErrorList, err error) {
	return load(filename, &parser{file: filename, res: r, id: id, hostChecks: true})
}

// load reads the config file filename and parses it with p.
func load(filename string, p *parser) ([]Service, ErrorList, error) {
	src, err := os.ReadFile(filename)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read config %q: %w", filename, err)
	}
	svcs, err := p.parse(src)
	return svcs, p.warns, err
}

// Parse reads config text, which came from the file filename (used only in
// errors), and returns its services in file order, checked and with every
// default filled in. Host lookups go through r; nil means the system's.
//
// Besides each line on its own, Parse checks what the lines say of each
// other: service names are unique, enabled listeners and streams do not
// share a socket, and the services that after= and needs= name are in
// the file, are not the service itself and make no dependency cycle.
//
// When the text has any problem, Parse returns no services and an
// ErrorList of every problem found, sorted by line, then column: an error
// on one line does not stop the checking of the others. Parse never
// panics, whatever src holds.
func Parse(filename string, src []byte, r *Resolver) ([]Service, error) {
	p := &parser{file: filename, res: r}
	return p.parse(src)
}

// ParseLine parses src, which must hold one service, as Parse does,
// except that the services its after= and needs= options name are not
// looked for: they are on other lines. It is for a service kept as its
// canonical line (see Print), as a re-exec hands services over, whose
// config was checked as a whole when it was loaded.
func ParseLine(filename string, src []byte, r *Resolver) (Service, error) {
	p := &parser{file: filename, res: r, alone: true}
	svcs, err := p.parse(src)
	if err != nil {
		return Service{}, err
	}
	if len(svcs) != 1 {
		return Service{}, fmt.Errorf("cannot parse %s: it holds %d services, not one", filename, len(svcs))
	}
	return svcs[0], nil
}

// parse is Parse for the file and host that p is set up with.
func (p *parser) parse(src []byte) ([]Service, error) {
	var svcs []Service
	// Every service whose socket is known, with errors or not: a port
	// conflict is reported even on a line that has other errors.
	var bound []Service
	first := make(map[string]int) // line of each name's first service
	// Every service by its first line, with errors or not: a service
	// named in after= is not unknown because its line has an error.
	var nodes []depNode
	for _, ws := range scanLines(src, p.errorf) {
		s, deps, ok := p.service(ws)
		if !validName(s.Name) {
			continue
		}
		if line, dup := first[s.Name]; dup {
			p.errorf(s.Pos, "duplicate service %q (first defined at line %d)", s.Name, line)
			continue
		}
		first[s.Name] = s.Pos.Line
		nodes = append(nodes, depNode{name: s.Name, edges: deps})
		if other := portUser(bound, &s); other != nil {
			p.errorf(s.Pos, "port %d already used by service %q (line %d)", s.Port, other.Name, other.Pos.Line)
			continue
		}
		bound = append(bound, s)
		if ok {
			svcs = append(svcs, s)
		}
	}
	p.checkDeps(nodes)
	slices.SortStableFunc(p.warns, byPosition)
	if len(p.errs) > 0 {
		slices.SortStableFunc(p.errs, byPosition)
		return nil, p.errs
	}
	return svcs, nil
}

func byPosition(a, b *Error) int {
	return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
}

// parser checks the lines of one config file and collects its errors and,
// when id is set, its warnings.
type parser struct {
	file string
	res  *Resolver
	id   *Identity // who metad runs as; nil: no warnings
	// hostChecks runs the options' checks of what a start reads (see
	// option.check): for Check only.
	hostChecks bool
	// alone says that the text is one line of a config whose other lines
	// are not given: the services named in after= and needs= are not
	// looked for (see ParseLine).
	alone bool
	errs  ErrorList
	warns ErrorList
}

func (p *parser) errorf(pos Pos, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: pos.Line, Col: pos.Col, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) warnf(pos Pos, format string, args ...any) {
	p.warns = append(p.warns, &Error{File: p.file, Line: pos.Line, Col: pos.Col, Msg: "warning: " + fmt.Sprintf(format, args...)})
}

// failedSince says whether an error after the first since errors is
// about w, a word that may be nil.
func (p *parser) failedSince(since int, w *word) bool {
	if w == nil {
		return false
	}
	for _, e := range p.errs[since:] {
		if e.Line == w.pos.Line && e.Col == w.pos.Col {
			return true
		}
	}
	return false
}

// service checks one logical line, NAME CLASS [OPTION...] PROGRAM [ARG...],
// and returns its service, its dependencies as written, and whether it is
// free of errors. The service's Name and Pos and the dependencies are set
// even when it is not.
func (p *parser) service(ws []word) (Service, []edge, bool) {
	nerrs := len(p.errs)
	name := ws[0]
	s := Service{Name: name.text, Pos: name.pos}
	if !validName(name.text) {
		p.errorf(name.pos, "invalid service name %q: use letters, digits, _, - and .", name.text)
	}
	if len(ws) == 1 {
		p.errorf(name.pos, "missing class and program for service %q", name.text)
		return s, nil, false
	}
	classWord := ws[1]
	s.Class = p.class(classWord)
	given, rest := p.options(&s, ws[2:])
	deps := edges(&s, given[optAfter], given[optNeeds])
	s.After = mergeNames(s.After, s.Needs)
	if sockets.has(s.Class) && given[optPort] == nil {
		p.errorf(classWord.pos, "class %s needs port=PORT", s.Class)
	}
	if len(rest) == 0 {
		p.errorf(name.pos, "missing program for service %q", name.text)
	} else {
		p.program(&s, rest[0])
		for _, w := range rest[1:] {
			s.Args = append(s.Args, w.text)
		}
	}
	// The defaults are filled in even on a line with errors, whose
	// socket still takes part in the check for port conflicts; unless
	// its port or address is wrong, which would make false ones.
	for id, o := range options {
		if given[id] == nil && o.def != nil && o.classes.has(s.Class) {
			o.def(&s)
		}
	}
	if p.failedSince(nerrs, given[optPort]) || p.failedSince(nerrs, given[optAddr]) {
		s.Port = 0
	}
	if given[optUser] != nil && !p.failedSince(nerrs, given[optUser]) {
		p.needsRoot(s.User, given[optUser])
	}
	if len(p.errs) > nerrs {
		return s, deps, false
	}
	p.agree(&s, given)
	return s, deps, len(p.errs) == nerrs
}

// needsRoot warns when metad, running as p.id, cannot run a program as u,
// given by the option word w: switching to another user, or to another
// group, is for root only.
func (p *parser) needsRoot(u *Credential, w *word) {
	if p.id == nil || p.id.UID == 0 || u == nil {
		return
	}
	if int(u.UID) != p.id.UID || int(u.GID) != p.id.GID {
		p.warnf(w.pos, "%s (uid %d, gid %d) needs metad to run as root, and it runs as uid %d, gid %d: the service cannot start", w.text, u.UID, u.GID, p.id.UID, p.id.GID)
	}
}

// class parses the class word, reporting an unknown class; it returns 0
// then.
func (p *parser) class(w word) Class {
	switch w.text {
	case "daemon":
		return Daemon
	case "listener", "listen":
		return Listener
	case "stream":
		return Stream
	}
	if s := suggest(w.text, []string{"daemon", "listener", "stream"}); s != "" {
		p.errorf(w.pos, "unknown class %q (did you mean %q?)", w.text, s)
	} else {
		p.errorf(w.pos, "unknown class %q (want daemon, listener or stream)", w.text)
	}
	return 0
}

// options sets s from the option words at the start of ws, which are
// after the class word, and returns where each option was given and the
// words left: the program and its arguments. A value is checked against
// s.Class when it is known.
func (p *parser) options(s *Service, ws []word) (given [numOptions]*word, rest []word) {
	for i := range ws {
		w := &ws[i]
		kind, id, val := classify(w.text)
		o := &options[id]
		switch {
		case kind == programWord:
			return given, ws[i:]
		case kind == unknownWord:
			key, _, _ := strings.Cut(w.text, "=")
			if sug := suggest(key, optionKeys()); sug != "" {
				p.errorf(w.pos, "unknown option %q (did you mean %q?)", key, sug)
			} else {
				p.errorf(w.pos, "unknown option %q", key)
			}
		case kind == negatedValue:
			p.errorf(w.pos, "option %q takes no value (write %s=yes or %s=no)", o.negated, o.key, o.key)
		case s.Class != 0 && !o.classes.has(s.Class):
			p.errorf(w.pos, "option %q does not apply to class %s", o.key, s.Class)
		case given[id] != nil && !o.repeat:
			first := given[id].pos
			p.errorf(w.pos, "duplicate option %q (first given at %d:%d)", o.key, first.Line, first.Col)
		default:
			given[id] = w
			if err := o.set(p.res, s, val); err != nil {
				p.errorf(w.pos, "%v", err)
			} else if p.hostChecks && o.check != nil {
				for _, err := range o.check(s) {
					p.errorf(w.pos, "%v", err)
				}
			}
		}
	}
	return given, nil
}

// program resolves the program word into s.Program and s.Path.
func (p *parser) program(s *Service, w word) {
	s.Program = w.text
	switch {
	case w.text == "":
		p.errorf(w.pos, "empty program name")
	case strings.Contains(w.text, "/") && !strings.HasPrefix(w.text, "/"):
		p.errorf(w.pos, "program %q: want an absolute path or a name to look up in PATH", w.text)
	default:
		path, err := p.res.lookPath(w.text)
		if err != nil {
			p.errorf(w.pos, "%v", err)
		}
		s.Path = path
	}
}

// agree checks the values that must agree with each other, in s with
// every default filled in; given says where each option was given.
func (p *parser) agree(s *Service, given [numOptions]*word) {
	// max is given when it is less than min, and pidfile when it is set:
	// neither has a default that could break these rules.
	if s.Class == Daemon && s.Min > s.Max && given[optMax] != nil {
		p.errorf(given[optMax].pos, "max=%d is less than min=%d", s.Max, s.Min)
	}
	if s.Pidfile != "" && s.Max != 1 && given[optPidfile] != nil {
		p.errorf(given[optPidfile].pos, "pidfile needs max=1, not %d: one pid file tracks one instance", s.Max)
	}
	for _, id := range []optionID{optCheckEvery, optCheckTimeout, optCheckFails} {
		if w := given[id]; w != nil && s.Check.Kind == ProbeNone {
			p.errorf(w.pos, "%s needs check=: without it there is no check to run", options[id].key)
		}
	}
	if w := given[optWatchdog]; w != nil && s.Ready.Kind != ReadyNotify {
		p.errorf(w.pos, "watchdog needs ready=notify, not ready=%s: the program sends WATCHDOG=1 to its notify socket", s.Ready)
	}
	if w := given[optQuiet]; w != nil && !s.Watch {
		p.errorf(w.pos, "quiet needs watch_output: without it metad does not read the program's output")
	}
}

// portUser returns the service of svcs that would hold the listening
// socket that s needs, or nil. Disabled services hold none at first, so
// two of them, or a disabled and an enabled one, may share a port; port 0
// is a port not known.
func portUser(svcs []Service, s *Service) *Service {
	if !sockets.has(s.Class) || !s.Enabled || s.Port == 0 {
		return nil
	}
	for i := range svcs {
		o := &svcs[i]
		if !sockets.has(o.Class) || !o.Enabled || o.Port != s.Port {
			continue
		}
		if overlap(o.Addr, s.Addr) {
			return o
		}
	}
	return nil
}

// overlap says whether sockets bound to a and b on one port would clash,
// the zero Addr being every address: "::" takes IPv4 too (Linux's default
// net.ipv6.bindv6only=0) and "0.0.0.0" every IPv4 address.
func overlap(a, b netip.Addr) bool {
	switch {
	case !a.IsValid() || !b.IsValid() || a == b:
		return true
	case a == netip.IPv6Unspecified() || b == netip.IPv6Unspecified():
		return true
	case a.IsUnspecified() || b.IsUnspecified():
		return a.Is4() == b.Is4()
	}
	return false
}

// validName says whether name is a valid service name.
func validName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		if !(c == '_' || c == '-' || c == '.' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// suggest returns the candidate closest to word, ignoring case, when it is
// close enough to be a likely typo; else "".
func suggest(word string, candidates []string) string {
	if len(word) > 32 {
		return ""
	}
	word = strings.ToLower(word)
	best, bestDist := "", 3 // at most two edits
	for _, c := range candidates {
		if d := editDistance(word, c); d < bestDist && d < len(word) {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance returns the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
