package conffmt

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// defaults returns the service that "NAME CLASS PROGRAM ARG..." parses to
// with fakeResolver, Pos aside, and port 80 for the classes that need one.
func defaults(name string, c Class, program string, args ...string) Service {
	path, err := fakeResolver().LookPath(program)
	if err != nil {
		panic(err)
	}
	s := Service{
		Name: name, Class: c,
		Dir: "/", Enabled: true, Crash: 10 * time.Second, Backoff: 5 * time.Minute,
		Stop: syscall.SIGTERM, Argv0: program, Program: program, Path: path, Args: args,
		ReadyTimeout: 90 * time.Second,
	}
	switch c {
	case Daemon:
		s.Min, s.Max = 1, 1
	case Listener:
		s.Max, s.Port, s.Backlog = 1, 80, 128
	case Stream:
		s.Max, s.Port, s.Backlog = 128, 80, 128
	}
	return s
}

// with returns s changed by f.
func with(s Service, f func(*Service)) Service {
	f(&s)
	return s
}

func parseOne(t *testing.T, src string) (Service, error) {
	t.Helper()
	svcs, err := Parse("t.conf", []byte(src), fakeResolver())
	if err != nil {
		return Service{}, err
	}
	if len(svcs) != 1 {
		t.Fatalf("got %d services, want 1", len(svcs))
	}
	svcs[0].Pos = Pos{}
	return svcs[0], nil
}

// checkParsed checks that src, one service, parses to want, Pos aside,
// and prints to text that parses to want again.
func checkParsed(t *testing.T, src string, want Service) {
	t.Helper()
	got, err := parseOne(t, src)
	if err != nil {
		t.Fatalf("got error %v, want none", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	checkRoundTrip(t, []Service{got}, fakeResolver())
}

// checkErrors checks that src, from the file t.conf, fails to parse with
// the errors want, one per line, each without "t.conf:".
func checkErrors(t *testing.T, src, want string) {
	t.Helper()
	svcs, err := Parse("t.conf", []byte(src), fakeResolver())
	if err == nil {
		t.Fatalf("got services %+v, want errors %q", svcs, want)
	}
	if svcs != nil {
		t.Errorf("got services %+v with errors, want none", svcs)
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("got %T, want ErrorList", err)
	}
	want = "t.conf:" + strings.ReplaceAll(want, "\n", "\nt.conf:")
	if got := err.Error(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestParseValid(t *testing.T) {
	daemon := defaults("d", Daemon, "sh")
	listener := defaults("l", Listener, "sh")
	stream := defaults("s", Stream, "sh")
	tests := []struct {
		name, src string
		want      Service
	}{
		// classes and their defaults
		{"daemon", "d daemon sh", daemon},
		{"listener", "l listener port=80 sh", listener},
		{"listen", "l listen port=80 sh", listener},
		{"stream", "s stream port=80 sh", stream},
		{"args", "d daemon sh -c 'echo hi' x=y max=3", with(daemon, func(s *Service) { s.Args = []string{"-c", "echo hi", "x=y", "max=3"} })},

		// min and max
		{"min", "d daemon min=3 sh", with(daemon, func(s *Service) { s.Min, s.Max = 3, 3 })},
		{"min 0", "d daemon min=0 sh", with(daemon, func(s *Service) { s.Min, s.Max = 0, 1 })},
		{"min max", "d daemon min=2 max=5 sh", with(daemon, func(s *Service) { s.Min, s.Max = 2, 5 })},
		{"max only", "d daemon max=4 sh", with(daemon, func(s *Service) { s.Max = 4 })},
		{"max limit", "d daemon max=1000000 sh", with(daemon, func(s *Service) { s.Max = 1000000 })},
		{"leading zeros", "d daemon max=007 sh", with(daemon, func(s *Service) { s.Max = 7 })},
		{"listener min 1", "l listener min=1 port=80 sh", with(listener, func(s *Service) { s.Min = 1 })},
		{"listener max 1", "l listener max=1 port=80 sh", listener},
		{"stream max", "s stream max=3 port=80 sh", with(stream, func(s *Service) { s.Max = 3 })},

		// period
		{"period seconds", "d daemon period=30 sh", with(daemon, func(s *Service) { s.Period = 30 * time.Second })},
		{"period duration", "d daemon period=1h30m sh", with(daemon, func(s *Service) { s.Period = 90 * time.Minute })},
		{"period 0", "d daemon period=0 sh", daemon},
		{"periodic", "d daemon min=0 max=1 period=1h sh", with(daemon, func(s *Service) { s.Min, s.Period = 0, time.Hour })},

		// general options
		{"dir", "d daemon dir=/srv/www sh", with(daemon, func(s *Service) { s.Dir = "/srv/www" })},
		{"user name", "d daemon user=www sh", with(daemon, func(s *Service) {
			s.User = &Credential{User: "www", UID: 33, GID: 33, Groups: []uint32{33, 100}}
		})},
		{"user group", "d daemon user=www:adm sh", with(daemon, func(s *Service) {
			s.User = &Credential{User: "www", Group: "adm", UID: 33, GID: 4}
		})},
		{"user numeric", "d daemon user=1234 sh", with(daemon, func(s *Service) {
			s.User = &Credential{User: "1234", UID: 1234, GID: 1234}
		})},
		{"user numeric group", "d daemon user=1234:5 sh", with(daemon, func(s *Service) {
			s.User = &Credential{User: "1234", Group: "5", UID: 1234, GID: 5}
		})},
		{"pidfile", "d daemon pidfile=/run/x.pid sh", with(daemon, func(s *Service) { s.Pidfile = "/run/x.pid" })},
		{"watch_output", "d daemon watch_output sh", with(daemon, func(s *Service) { s.Watch = true })},
		{"watch_output=yes", "d daemon watch_output=yes sh", with(daemon, func(s *Service) { s.Watch = true })},
		{"watch_output=no", "d daemon watch_output=no sh", daemon},
		{"enabled", "d daemon enabled sh", daemon},
		{"enabled=no", "d daemon enabled=no sh", with(daemon, func(s *Service) { s.Enabled = false })},
		{"enabled=Off", "d daemon enabled=Off sh", with(daemon, func(s *Service) { s.Enabled = false })},
		{"enabled=true", "d daemon enabled=true sh", daemon},
		{"enabled=1", "d daemon enabled=1 sh", daemon},
		{"disabled", "d daemon disabled sh", with(daemon, func(s *Service) { s.Enabled = false })},
		{"env", "d daemon env=A=1 'env=B=two words' env=C= env=A=3 sh", with(daemon, func(s *Service) {
			s.Env = []string{"A=1", "B=two words", "C=", "A=3"}
		})},
		{"crash", "d daemon crash=30 sh", with(daemon, func(s *Service) { s.Crash = 30 * time.Second })},
		{"crash ms", "d daemon crash=500ms sh", with(daemon, func(s *Service) { s.Crash = 500 * time.Millisecond })},
		{"backoff", "d daemon backoff=1h sh", with(daemon, func(s *Service) { s.Backoff = time.Hour })},
		{"stop name", "d daemon stop=INT sh", with(daemon, func(s *Service) { s.Stop = syscall.SIGINT })},
		{"stop sig", "d daemon stop=SIGQUIT sh", with(daemon, func(s *Service) { s.Stop = syscall.SIGQUIT })},
		{"stop lower", "d daemon stop=sighup sh", with(daemon, func(s *Service) { s.Stop = syscall.SIGHUP })},
		{"stop number", "d daemon stop=9 sh", with(daemon, func(s *Service) { s.Stop = syscall.SIGKILL })},
		{"stop realtime", "d daemon stop=40 sh", with(daemon, func(s *Service) { s.Stop = syscall.Signal(40) })},
		{"stop io", "d daemon stop=io sh", with(daemon, func(s *Service) { s.Stop = syscall.SIGIO })},
		{"stop kill", "d daemon stop=KILL sh", with(daemon, func(s *Service) { s.Stop = syscall.SIGKILL })},
		{"stop winch", "d daemon stop=WINCH sh", with(daemon, func(s *Service) { s.Stop = syscall.SIGWINCH })},
		{"argv0", "d daemon argv0=-sh sh", with(daemon, func(s *Service) { s.Argv0 = "-sh" })},

		// listener and stream options
		{"port name", "s stream port=daytime sh", with(stream, func(s *Service) { s.Port = 13 })},
		{"port max", "s stream port=65535 sh", with(stream, func(s *Service) { s.Port = 65535 })},
		{"addr v4", "s stream port=80 addr=127.0.0.1 sh", with(stream, func(s *Service) { s.Addr = netip.MustParseAddr("127.0.0.1") })},
		{"addr v6", "s stream port=80 addr=::1 sh", with(stream, func(s *Service) { s.Addr = netip.MustParseAddr("::1") })},
		{"backlog", "l listener port=80 backlog=16 sh", with(listener, func(s *Service) { s.Backlog = 16 })},

		// programs
		{"absolute program", "d daemon /usr/sbin/nginx -g 'daemon off;'", with(defaults("d", Daemon, "/usr/sbin/nginx"), func(s *Service) {
			s.Args = []string{"-g", "daemon off;"}
		})},
		{"program after options", "d daemon max=2 nginx", with(defaults("d", Daemon, "nginx"), func(s *Service) { s.Max = 2 })},

		// words
		{"double quotes", `d daemon sh "a b" "say \"hi\"" "\$x \y"`, with(daemon, func(s *Service) { s.Args = []string{"a b", `say "hi"`, `$x \y`} })},
		{"single quotes", `d daemon sh 'a "b" \c'`, with(daemon, func(s *Service) { s.Args = []string{`a "b" \c`} })},
		{"backslashes", `d daemon sh a\ b \'c \\`, with(daemon, func(s *Service) { s.Args = []string{"a b", "'c", `\`} })},
		{"empty word", "d daemon sh '' \"\"", with(daemon, func(s *Service) { s.Args = []string{"", ""} })},
		{"joined quotes", `d daemon sh a'b c'"d"`, with(daemon, func(s *Service) { s.Args = []string{"ab cd"} })},
		{"comment", "# a comment\n\n  \t\nd daemon sh # the shell\n# another", daemon},
		{"hash in word", "d daemon sh a#b '#c' \\#d", with(daemon, func(s *Service) { s.Args = []string{"a#b", "#c", "#d"} })},
		{"continuation", "d daemon \\\n  max=2 \\\n  sh", with(daemon, func(s *Service) { s.Max = 2 })},
		{"continuation in word", "d daemon sh ab\\\ncd \"ef\\\ngh\"", with(daemon, func(s *Service) { s.Args = []string{"abcd", "efgh"} })},
		{"continuation then comment", "d daemon sh a \\\n # b \\\n", with(daemon, func(s *Service) { s.Args = []string{"a"} })},
		{"final backslash", "d daemon sh a\\", with(daemon, func(s *Service) { s.Args = []string{"a"} })},
		{"tabs", "d\tdaemon\tsh\t", daemon},
		{"quoted option", `d daemon "max=2" sh`, with(daemon, func(s *Service) { s.Max = 2 })},
		{"quoted name", `'d' "daemon" sh`, daemon},
		{"name chars", "A-z_0.9 daemon sh", with(daemon, func(s *Service) { s.Name = "A-z_0.9" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkParsed(t, tt.src, tt.want) })
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, src string
		want      string // every error, one per line, without "t.conf:"
	}{
		// lines
		{"bad name", "w/b daemon sh", `1:1: invalid service name "w/b": use letters, digits, _, - and .`},
		{"missing class", "web", `1:1: missing class and program for service "web"`},
		{"missing program", "web daemon max=2", `1:1: missing program for service "web"`},
		{"unknown class", "web deamon sh", `1:5: unknown class "deamon" (did you mean "daemon"?)`},
		{"unknown class far", "web thing sh", `1:5: unknown class "thing" (want daemon, listener or stream)`},
		{"capital class", "web Daemon sh", `1:5: unknown class "Daemon" (did you mean "daemon"?)`},
		{"duplicate name", "# c\nweb daemon sh\nweb stream port=80 sh", `3:1: duplicate service "web" (first defined at line 2)`},
		{"duplicate name with errors", "web daemon nope\nweb daemon sh",
			"1:12: program \"nope\" not found in PATH\n2:1: duplicate service \"web\" (first defined at line 1)"},

		// words
		{"unterminated single", "web daemon sh 'abc\nok daemon sh", `1:15: unterminated single quote`},
		{"unterminated double", `web daemon sh "abc`, `1:15: unterminated double quote`},
		{"single quote spans lines", "web daemon sh 'a \\\nb'", "1:15: unterminated single quote\n2:2: unterminated single quote"},
		{"one scan error a line", `web daemon 'a "b`, `1:12: unterminated single quote`},
		{"NUL", "web daemon sh a\x00b", `1:16: NUL byte in word`},
		{"NUL escaped", "web daemon sh \\\x00", `1:16: NUL byte in word`},
		{"NUL quoted", "web daemon sh \"\x00\"", `1:16: NUL byte in word`},

		// option words
		{"unknown option", "web daemon mx=3 sh", `1:12: unknown option "mx" (did you mean "max"?)`},
		{"unknown option case", "web daemon Max=3 sh", `1:12: unknown option "Max" (did you mean "max"?)`},
		{"unknown option far", "web daemon colour=red sh", `1:12: unknown option "colour"`},
		{"empty key", "web daemon =3 sh", `1:12: unknown option ""`},
		{"not for class", "web daemon port=80 sh", `1:12: option "port" does not apply to class daemon`},
		{"min for stream", "web stream port=80 min=1 sh", `1:20: option "min" does not apply to class stream`},
		{"pidfile for listener", "web listener port=80 pidfile=/x sh", `1:22: option "pidfile" does not apply to class listener`},
		{"period for stream", "web stream port=80 period=5 sh", `1:20: option "period" does not apply to class stream`},
		{"duplicate option", "web daemon max=2 max=3 sh", `1:18: duplicate option "max" (first given at 1:12)`},
		{"enabled twice", "web daemon enabled \\\n  disabled sh", `2:3: duplicate option "enabled" (first given at 1:12)`},
		{"disabled with value", "web daemon disabled=yes sh", `1:12: option "disabled" takes no value (write enabled=yes or enabled=no)`},
		{"bare key", "web daemon max sh", `1:12: program "max" not found in PATH`},

		// values
		{"min word", "web daemon min=x sh", `1:12: invalid min "x": want a whole number from 0 to 1000000`},
		{"min negative", "web daemon min=-1 sh", `1:12: invalid min "-1": want a whole number from 0 to 1000000`},
		{"min too big", "web daemon min=1000001 sh", `1:12: invalid min "1000001": want a whole number from 0 to 1000000`},
		{"min huge", "web daemon min=99999999999999999999999 sh", `1:12: invalid min "99999999999999999999999": want a whole number from 0 to 1000000`},
		{"listener min", "web listener port=80 min=2 sh", `1:22: invalid min "2": want a whole number from 0 to 1`},
		{"max 0", "web daemon max=0 sh", `1:12: invalid max "0": want a whole number from 1 to 1000000`},
		{"max empty", "web daemon max= sh", `1:12: invalid max "": want a whole number from 1 to 1000000`},
		{"max plus", "web daemon max=+2 sh", `1:12: invalid max "+2": want a whole number from 1 to 1000000`},
		{"listener max", "web listener port=80 max=2 sh", `1:22: invalid max "2": a listener runs one process at a time, so max is 1`},
		{"min over max", "web daemon min=3 max=2 sh", `1:18: max=2 is less than min=3`},
		{"max before min", "web daemon max=2 min=3 sh", `1:12: max=2 is less than min=3`},
		{"period word", "web daemon period=soon sh", `1:12: invalid period "soon": want whole seconds (30) or a duration (500ms, 1h30m)`},
		{"period float", "web daemon period=1.5 sh", `1:12: invalid period "1.5": want whole seconds (30) or a duration (500ms, 1h30m)`},
		{"period negative", "web daemon period=-1s sh", `1:12: invalid period "-1s": must not be negative`},
		{"period overflow", "web daemon period=9999999999999 sh", `1:12: invalid period "9999999999999": want whole seconds (30) or a duration (500ms, 1h30m)`},
		{"crash 0", "web daemon crash=0 sh", `1:12: invalid crash "0": must be more than 0`},
		{"crash 0s", "web daemon crash=0s sh", `1:12: invalid crash "0s": must be more than 0`},
		{"backoff negative", "web daemon backoff=-5m sh", `1:12: invalid backoff "-5m": must not be negative`},
		{"dir relative", "web daemon dir=srv sh", `1:12: invalid dir "srv": want an absolute path`},
		{"dir empty", "web daemon dir= sh", `1:12: invalid dir "": want an absolute path`},
		{"pidfile relative", "web daemon pidfile=x.pid sh", `1:12: invalid pidfile "x.pid": want an absolute path`},
		{"pidfile max", "web daemon pidfile=/x.pid max=2 sh", `1:12: pidfile needs max=1, not 2: one pid file tracks one instance`},
		{"pidfile min", "web daemon min=2 pidfile=/x.pid sh", `1:18: pidfile needs max=1, not 2: one pid file tracks one instance`},
		{"unknown user", "web daemon user=nobodyy sh", `1:12: unknown user "nobodyy"`},
		{"unknown group", "web daemon user=www:staf sh", `1:12: unknown group "staf"`},
		{"watch_output value", "web daemon watch_output=maybe sh", `1:12: invalid watch_output "maybe": want yes or no`},
		{"enabled value", "web daemon enabled=2 sh", `1:12: invalid enabled "2": want yes or no`},
		{"env no value", "web daemon env=A sh", `1:12: invalid env "A": want NAME=VALUE, NAME made of letters, digits and _ and not starting with a digit`},
		{"env bad name", "web daemon env=1A=b sh", `1:12: invalid env "1A=b": want NAME=VALUE, NAME made of letters, digits and _ and not starting with a digit`},
		{"env empty name", "web daemon env==b sh", `1:12: invalid env "=b": want NAME=VALUE, NAME made of letters, digits and _ and not starting with a digit`},
		{"stop unknown", "web daemon stop=FOO sh", `1:12: invalid stop "FOO": want a signal name (TERM, SIGINT...) or a number from 1 to 64`},
		{"stop 0", "web daemon stop=0 sh", `1:12: invalid stop "0": want a signal name (TERM, SIGINT...) or a number from 1 to 64`},
		{"stop 65", "web daemon stop=65 sh", `1:12: invalid stop "65": want a signal name (TERM, SIGINT...) or a number from 1 to 64`},
		{"stop STOP", "web daemon stop=STOP sh", `1:12: invalid stop "STOP": a job-control signal pauses or resumes a process instead of ending it`},
		{"stop TSTP number", "web daemon stop=20 sh", `1:12: invalid stop "20": a job-control signal pauses or resumes a process instead of ending it`},
		{"argv0 empty", "web daemon argv0= sh", `1:12: invalid argv0 "": want a non-empty name`},
		{"port missing", "web stream sh", `1:5: class stream needs port=PORT`},
		{"port missing listener", "web listen sh", `1:5: class listener needs port=PORT`},
		{"port 0", "web stream port=0 sh", `1:12: invalid port "0": want 1 to 65535 or a name from /etc/services`},
		{"port too big", "web stream port=65536 sh", `1:12: invalid port "65536": want 1 to 65535 or a name from /etc/services`},
		{"port empty", "web stream port= sh", `1:12: invalid port "": want 1 to 65535 or a name from /etc/services`},
		{"port unknown", "web stream port=htp sh", `1:12: unknown port "htp"`},
		{"port name range", "web stream port=huge sh", `1:12: invalid port "huge": it names port 70000, outside 1 to 65535`},
		{"addr", "web stream port=80 addr=localhost sh", `1:20: invalid addr "localhost": want an IPv4 or IPv6 address`},
		{"backlog 0", "web stream port=80 backlog=0 sh", `1:20: invalid backlog "0": want a whole number from 1 to 1000000`},

		// ports shared
		{"same port", "a stream port=80 sh\nb listener port=http sh", `2:1: port 80 already used by service "a" (line 1)`},
		{"every address and one", "a stream port=80 sh\nb stream port=80 addr=127.0.0.1 sh", `2:1: port 80 already used by service "a" (line 1)`},
		{"one and every address", "a stream port=80 addr=::1 sh\nb stream port=80 sh", `2:1: port 80 already used by service "a" (line 1)`},
		{"same address", "a stream port=80 addr=10.0.0.1 sh\nb stream port=80 addr=10.0.0.1 sh", `2:1: port 80 already used by service "a" (line 1)`},
		{"any IPv4", "a stream port=80 addr=0.0.0.0 sh\nb stream port=80 addr=127.0.0.1 sh", `2:1: port 80 already used by service "a" (line 1)`},
		{"any IPv6 takes IPv4", "a stream port=80 addr=127.0.0.1 sh\nb stream port=80 addr=:: sh", `2:1: port 80 already used by service "a" (line 1)`},
		{"conflict on a line with another error", "a stream port=80 sh\nb stream port=80 max=0 sh",
			"2:1: port 80 already used by service \"a\" (line 1)\n" +
				"2:18: invalid max \"0\": want a whole number from 1 to 1000000"},
		{"conflict with a line with another error", "a stream port=80 nope\nb stream port=80 sh",
			"1:18: program \"nope\" not found in PATH\n" +
				"2:1: port 80 already used by service \"a\" (line 1)"},
		{"no conflict from a bad address", "a stream port=80 addr=127.0.0.1 sh\nb stream port=80 addr=localhost sh",
			`2:18: invalid addr "localhost": want an IPv4 or IPv6 address`},
		{"no conflict from a bad port", "a stream port=80 sh\nb stream port=htp sh", `2:10: unknown port "htp"`},

		// programs
		{"program not found", "web daemon nginxx", `1:12: program "nginxx" not found in PATH`},
		{"absolute not found", "web daemon /usr/sbin/nginxx", `1:12: program "/usr/sbin/nginxx" not found`},
		{"relative program", "web daemon ./nginx", `1:12: program "./nginx": want an absolute path or a name to look up in PATH`},
		{"empty program", "web daemon ''", `1:12: empty program name`},

		// many errors, in file order
		{"all reported", "a daemon mx=1 \\\n   port=80 nope\nb stream sh\n\nc daemon 'x\nd daemon max=0 min=x sh\na daemon sh",
			"1:10: unknown option \"mx\" (did you mean \"max\"?)\n" +
				"2:4: option \"port\" does not apply to class daemon\n" +
				"2:12: program \"nope\" not found in PATH\n" +
				"3:3: class stream needs port=PORT\n" +
				"5:10: unterminated single quote\n" +
				"6:10: invalid max \"0\": want a whole number from 1 to 1000000\n" +
				"6:16: invalid min \"x\": want a whole number from 0 to 1000000\n" +
				"7:1: duplicate service \"a\" (first defined at line 1)"},
		{"unknown class still checks", "web deamon mx=1 nope", "1:5: unknown class \"deamon\" (did you mean \"daemon\"?)\n" +
			"1:12: unknown option \"mx\" (did you mean \"max\"?)\n" +
			"1:17: program \"nope\" not found in PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, tt.src, tt.want) })
	}
}

func TestParseSharedPorts(t *testing.T) {
	tests := []struct{ name, src string }{
		{"other addresses", "a stream port=80 addr=127.0.0.1 sh\nb stream port=80 addr=127.0.0.2 sh"},
		{"other families", "a stream port=80 addr=0.0.0.0 sh\nb stream port=80 addr=::1 sh"},
		{"other ports", "a stream port=80 sh\nb stream port=81 sh"},
		{"disabled", "a stream port=80 disabled sh\nb stream port=80 sh\nc stream enabled=no port=80 sh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse("t.conf", []byte(tt.src), fakeResolver()); err != nil {
				t.Errorf("got %v, want no error", err)
			}
		})
	}
}

func TestParsePositions(t *testing.T) {
	src := "# services\n\nweb daemon sh\n  \\\n  db stream \\\n port=80 sh\n"
	svcs, err := Parse("t.conf", []byte(src), fakeResolver())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range svcs {
		got = append(got, fmt.Sprintf("%s@%d:%d", s.Name, s.Pos.Line, s.Pos.Col))
	}
	if want := []string{"web@3:1", "db@5:3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, src := range []string{"", "\n", "# nothing\n", "  \\\n\t\n", "\\"} {
		svcs, err := Parse("t.conf", []byte(src), fakeResolver())
		if err != nil || len(svcs) != 0 {
			t.Errorf("Parse(%q): got %v, %v, want no services and no error", src, svcs, err)
		}
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&Error{File: "/etc/metad.conf", Line: 3, Col: 7, Msg: "bad"}, "/etc/metad.conf:3:7: bad"},
		{&Error{Line: 3, Col: 7, Msg: "bad"}, "3:7: bad"},
		{ErrorList{{File: "f", Line: 1, Col: 2, Msg: "a"}, {File: "f", Line: 3, Col: 4, Msg: "b"}}, "f:1:2: a\nf:3:4: b"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	name := dir + "/metad.conf"
	if err := os.WriteFile(name, []byte("web daemon sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	svcs, err := Load(name, fakeResolver())
	if err != nil || len(svcs) != 1 || svcs[0].Name != "web" {
		t.Errorf("got %v, %v, want service web", svcs, err)
	}

	_, err = Load(dir+"/missing.conf", nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want an error wrapping os.ErrNotExist", err)
	}
	if want := fmt.Sprintf("cannot read config %q: ", dir+"/missing.conf"); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %v, want it to start with %q", err, want)
	}
}

func TestExampleConfig(t *testing.T) {
	svcs, err := Load("../examples/metad.conf", nil)
	if err != nil {
		t.Fatalf("got %v, want the example to parse on this host", err)
	}
	classes := map[Class]bool{}
	for _, s := range svcs {
		classes[s.Class] = true
	}
	if len(classes) != 3 {
		t.Errorf("got classes %v, want every class shown", classes)
	}
	checkRoundTrip(t, svcs, nil)
}

// benchConfig returns a config of about 100 services of every class.
func benchConfig() []byte {
	var b strings.Builder
	b.WriteString("# generated for BenchmarkParse\n")
	for i := range 34 {
		fmt.Fprintf(&b, "d%d daemon min=%d max=4 period=30s watch_output env=N=%d \\\n  sh -c 'while :; do date; sleep 5; done'\n", i, i%3, i)
		fmt.Fprintf(&b, "l%d listener port=%d addr=127.0.0.1 user=www dir=/tmp cat\n", i, 7000+i)
		fmt.Fprintf(&b, "s%d stream port=%d max=10 crash=1s backoff=1m stop=INT \"/bin/sh\" -c \"echo \\\"hi\\\"\" # reply\n", i, 7100+i)
	}
	return []byte(b.String())
}

func BenchmarkParse(b *testing.B) {
	src := benchConfig()
	r := fakeResolver()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if _, err := Parse("bench.conf", src, r); err != nil {
			b.Fatal(err)
		}
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"0", 0, ""},
		{"30", 30 * time.Second, ""},
		{"500ms", 500 * time.Millisecond, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"1.5s", 1500 * time.Millisecond, ""},
		{"9223372036", 9223372036 * time.Second, ""},
		{"9223372037", 0, "want whole seconds (30) or a duration (500ms, 1h30m)"},
		{"", 0, "want whole seconds (30) or a duration (500ms, 1h30m)"},
		{"10x", 0, "want whole seconds (30) or a duration (500ms, 1h30m)"},
		{"-1", 0, "want whole seconds (30) or a duration (500ms, 1h30m)"},
		{"-1s", 0, "must not be negative"},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseDuration(%q): got %v, %v, want error %s", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q): got %v, %v, want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"}, {500 * time.Millisecond, "500ms"}, {10 * time.Second, "10s"}, {5 * time.Minute, "5m"},
		{time.Hour, "1h"}, {90 * time.Minute, "1h30m"}, {time.Hour + time.Second, "1h0m1s"}, {90 * time.Second, "1m30s"},
	}
	for _, tt := range tests {
		if got := formatDuration(tt.in); got != tt.want {
			t.Errorf("formatDuration(%v): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCheckWarnsUserNeedsRoot(t *testing.T) {
	src := "# users\n" +
		"a daemon user=www sh\n" +
		"b daemon user=1000 sh\n" +
		"c daemon user=1000:adm sh\n" +
		"d daemon sh\n" +
		"e daemon max=0 user=root sh\n"
	name := filepath.Join(t.TempDir(), "metad.conf")
	if err := os.WriteFile(name, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		id   *Identity
		want string // the warnings, one per line
	}{
		{"no identity", nil, ""},
		{"root", &Identity{UID: 0, GID: 0}, ""},
		{"user 1000", &Identity{UID: 1000, GID: 1000},
			name + ":2:10: warning: user=www (uid 33, gid 33) needs metad to run as root, and it runs as uid 1000, gid 1000: the service cannot start\n" +
				name + ":4:10: warning: user=1000:adm (uid 1000, gid 4) needs metad to run as root, and it runs as uid 1000, gid 1000: the service cannot start\n" +
				name + ":6:16: warning: user=root (uid 0, gid 0) needs metad to run as root, and it runs as uid 1000, gid 1000: the service cannot start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svcs, warns, err := Check(name, tt.id, fakeResolver())
			if got := warns.Error(); got != tt.want {
				t.Errorf("got warnings\n%s\nwant\n%s", got, tt.want)
			}
			// line 6 has an error: no services, and the warnings all the same
			if err == nil || svcs != nil {
				t.Errorf("got %v, %v, want the error of line 6", svcs, err)
			}
		})
	}

	// A file without errors loads, warnings or not.
	if err := os.WriteFile(name, []byte("a daemon user=www sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	svcs, warns, err := Check(name, &Identity{UID: 1000, GID: 1000}, fakeResolver())
	if err != nil || len(svcs) != 1 || len(warns) != 1 {
		t.Errorf("got %v, %v, %v, want service a and one warning", svcs, warns, err)
	}
}
