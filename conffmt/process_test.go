package conffmt

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func umask(m fs.FileMode) *fs.FileMode { return &m }
func nice(n int) *int                  { return &n }

func TestParseProcessOptions(t *testing.T) {
	daemon := defaults("d", Daemon, "sh")
	stream := defaults("s", Stream, "sh")
	listener := defaults("l", Listener, "sh")
	const G = 1 << 30
	tests := []struct {
		name, src string
		want      Service
	}{
		{"env_file", "d daemon env_file=/etc/a.env env_file=-/etc/b.env env_file=/etc/a.env sh", with(daemon, func(s *Service) {
			s.EnvFiles = []EnvFile{{Path: "/etc/a.env"}, {Path: "/etc/b.env", Optional: true}, {Path: "/etc/a.env"}}
		})},
		{"umask", "d daemon umask=027 sh", with(daemon, func(s *Service) { s.Umask = umask(0o27) })},
		{"umask 4 digits", "d daemon umask=0777 sh", with(daemon, func(s *Service) { s.Umask = umask(0o777) })},
		{"umask 0", "d daemon umask=0 sh", with(daemon, func(s *Service) { s.Umask = umask(0) })},
		{"nice", "d daemon nice=10 sh", with(daemon, func(s *Service) { s.Nice = nice(10) })},
		{"nice negative", "d daemon nice=-20 sh", with(daemon, func(s *Service) { s.Nice = nice(-20) })},
		{"nice plus", "d daemon nice=+19 sh", with(daemon, func(s *Service) { s.Nice = nice(19) })},
		{"nice 0", "d daemon nice=0 sh", with(daemon, func(s *Service) { s.Nice = nice(0) })},
		{"limit soft only", "d daemon limit=nofile=1024 sh", with(daemon, func(s *Service) {
			s.Limits = []Limit{{unix.RLIMIT_NOFILE, 1024, 1024}}
		})},
		{"limit soft hard", "d daemon limit=nofile=1024:4096 sh", with(daemon, func(s *Service) {
			s.Limits = []Limit{{unix.RLIMIT_NOFILE, 1024, 4096}}
		})},
		{"limit infinity", "d daemon limit=core=0:infinity limit=memlock=unlimited sh", with(daemon, func(s *Service) {
			s.Limits = []Limit{{unix.RLIMIT_CORE, 0, Unlimited}, {unix.RLIMIT_MEMLOCK, Unlimited, Unlimited}}
		})},
		{"limit sizes", "d daemon limit=as=1G:2g limit=stack=8M limit=fsize=3k limit=memlock=1T sh", with(daemon, func(s *Service) {
			s.Limits = []Limit{{unix.RLIMIT_MEMLOCK, 1 << 40, 1 << 40}, {unix.RLIMIT_STACK, 8 << 20, 8 << 20},
				{unix.RLIMIT_AS, G, 2 * G}, {unix.RLIMIT_FSIZE, 3 << 10, 3 << 10}}
		})},
		{"limit cpu", "d daemon limit=cpu=1h:7200 sh", with(daemon, func(s *Service) { s.Limits = []Limit{{unix.RLIMIT_CPU, 3600, 7200}} })},
		{"limits in table order", "d daemon limit=fsize=1 limit=cpu=2 limit=as=3 limit=stack=4 limit=memlock=5 limit=core=6 limit=nproc=7 limit=nofile=8 sh",
			with(daemon, func(s *Service) {
				s.Limits = []Limit{{unix.RLIMIT_NOFILE, 8, 8}, {unix.RLIMIT_NPROC, 7, 7}, {unix.RLIMIT_CORE, 6, 6}, {unix.RLIMIT_MEMLOCK, 5, 5},
					{unix.RLIMIT_STACK, 4, 4}, {unix.RLIMIT_AS, 3, 3}, {unix.RLIMIT_CPU, 2, 2}, {unix.RLIMIT_FSIZE, 1, 1}}
			})},
		{"limit largest", "d daemon limit=nofile=9223372036854775807 limit=as=8388607T sh", with(daemon, func(s *Service) {
			s.Limits = []Limit{{unix.RLIMIT_NOFILE, 1<<63 - 1, 1<<63 - 1}, {unix.RLIMIT_AS, 8388607 << 40, 8388607 << 40}}
		})},
		{"stream", "s stream port=80 umask=077 nice=5 limit=nproc=10 env_file=/x sh", with(stream, func(s *Service) {
			s.Umask, s.Nice, s.Limits, s.EnvFiles = umask(0o77), nice(5), []Limit{{unix.RLIMIT_NPROC, 10, 10}}, []EnvFile{{Path: "/x"}}
		})},
		{"listener", "l listener port=80 nice=-1 sh", with(listener, func(s *Service) { s.Nice = nice(-1) })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkParsed(t, tt.src, tt.want) })
	}
}

func TestParseProcessOptionErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"env_file relative", "web daemon env_file=web.env sh", `1:12: invalid env_file "web.env": want an absolute path, or -PATH for a file that may not exist`},
		{"env_file empty", "web daemon env_file= sh", `1:12: invalid env_file "": want an absolute path, or -PATH for a file that may not exist`},
		{"env_file dash", "web daemon env_file=- sh", `1:12: invalid env_file "-": want an absolute path, or -PATH for a file that may not exist`},
		{"umask 8", "web daemon umask=08 sh", `1:12: invalid umask "08": want an octal mask from 0000 to 0777`},
		{"umask big", "web daemon umask=1000 sh", `1:12: invalid umask "1000": want an octal mask from 0000 to 0777`},
		{"umask long", "web daemon umask=00022 sh", `1:12: invalid umask "00022": want an octal mask from 0000 to 0777`},
		{"umask empty", "web daemon umask= sh", `1:12: invalid umask "": want an octal mask from 0000 to 0777`},
		{"umask sign", "web daemon umask=+22 sh", `1:12: invalid umask "+22": want an octal mask from 0000 to 0777`},
		{"umask symbolic", "web daemon umask=u=rwx sh", `1:12: invalid umask "u=rwx": want an octal mask from 0000 to 0777`},
		{"umask twice", "web daemon umask=022 umask=077 sh", `1:22: duplicate option "umask" (first given at 1:12)`},
		{"nice 20", "web daemon nice=20 sh", `1:12: invalid nice "20": want a whole number from -20 to 19`},
		{"nice -21", "web daemon nice=-21 sh", `1:12: invalid nice "-21": want a whole number from -20 to 19`},
		{"nice two signs", "web daemon nice=+-1 sh", `1:12: invalid nice "+-1": want a whole number from -20 to 19`},
		{"nice word", "web daemon nice=low sh", `1:12: invalid nice "low": want a whole number from -20 to 19`},
		{"nice empty", "web daemon nice= sh", `1:12: invalid nice "": want a whole number from -20 to 19`},
		{"nice sign only", "web daemon nice=- sh", `1:12: invalid nice "-": want a whole number from -20 to 19`},
		{"limit no value", "web daemon limit=nofile sh", `1:12: invalid limit "nofile": want NAME=SOFT or NAME=SOFT:HARD`},
		{"limit typo", "web daemon limit=nofiles=10 sh", `1:12: unknown limit "nofiles" (did you mean "nofile"?)`},
		{"limit case", "web daemon limit=NOFILE=10 sh", `1:12: unknown limit "NOFILE" (did you mean "nofile"?)`},
		{"limit unknown", "web daemon limit=rtprio=10 sh", `1:12: unknown limit "rtprio" (want one of nofile, nproc, core, memlock, stack, as, cpu, fsize)`},
		{"limit soft above hard", "web daemon limit=nofile=10:5 sh", `1:12: invalid limit "nofile=10:5": the soft limit is above the hard limit`},
		{"limit infinity above hard", "web daemon limit=core=infinity:0 sh", `1:12: invalid limit "core=infinity:0": the soft limit is above the hard limit`},
		{"limit size on a count", "web daemon limit=nofile=1K sh", `1:12: invalid limit "nofile=1K": want a whole number up to 2^63-1, or infinity`},
		{"limit empty", "web daemon limit=nofile= sh", `1:12: invalid limit "nofile=": want a whole number up to 2^63-1, or infinity`},
		{"limit empty hard", "web daemon limit=nofile=1: sh", `1:12: invalid limit "nofile=1:": want a whole number up to 2^63-1, or infinity`},
		{"limit three", "web daemon limit=nofile=1:2:3 sh", `1:12: invalid limit "nofile=1:2:3": want a whole number up to 2^63-1, or infinity`},
		{"limit negative", "web daemon limit=nproc=-1 sh", `1:12: invalid limit "nproc=-1": want a whole number up to 2^63-1, or infinity`},
		{"limit too big", "web daemon limit=nofile=9223372036854775808 sh", `1:12: invalid limit "nofile=9223372036854775808": want a whole number up to 2^63-1, or infinity`},
		{"limit size too big", "web daemon limit=as=8388608T sh", `1:12: invalid limit "as=8388608T": want a number of bytes up to 2^63-1, with an optional K, M, G or T suffix, or infinity`},
		{"limit bad suffix", "web daemon limit=as=1P sh", `1:12: invalid limit "as=1P": want a number of bytes up to 2^63-1, with an optional K, M, G or T suffix, or infinity`},
		{"limit suffix only", "web daemon limit=as=K sh", `1:12: invalid limit "as=K": want a number of bytes up to 2^63-1, with an optional K, M, G or T suffix, or infinity`},
		{"limit cpu fraction", "web daemon limit=cpu=1500ms sh", `1:12: invalid limit "cpu=1500ms": want whole seconds (3600, 1h) or infinity`},
		{"limit Infinity", "web daemon limit=cpu=Infinity sh", `1:12: invalid limit "cpu=Infinity": want whole seconds (3600, 1h) or infinity`},
		{"limit twice", "web daemon limit=nofile=1 limit=core=0 limit=nofile=2 sh", `1:40: duplicate limit "nofile" (give each resource once)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, tt.src, tt.want) })
	}
}

func TestPrintProcessOptions(t *testing.T) {
	src := `a daemon limit=stack=8192K limit=nofile=1024:4096 limit=as=1536 limit=core=infinity:infinity limit=cpu=1h \
    nice=-5 umask=22 env_file=-/etc/default/a env_file=/etc/a.env env=A=1 sh
b stream port=7 limit=fsize=0:1G cat
`
	svcs, err := Parse("t.conf", []byte(src), fakeResolver())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Print(&b, svcs); err != nil {
		t.Fatal(err)
	}
	want := `a daemon min=1 max=1 period=0s dir=/ watch_output=no enabled=yes env=A=1 env_file=-/etc/default/a env_file=/etc/a.env crash=10s backoff=5m stop=TERM argv0=sh umask=0022 nice=-5 limit=nofile=1024:4096 limit=core=infinity limit=stack=8M limit=as=1536 limit=cpu=3600 ready=started ready_timeout=1m30s restart=always retries=0 on_failure=none on_success=none sh
b stream max=128 port=7 backlog=128 dir=/ watch_output=no enabled=yes crash=10s backoff=5m stop=TERM argv0=cat limit=fsize=0:1G ready=started ready_timeout=1m30s retries=0 on_failure=none on_success=none cat
`
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	checkRoundTrip(t, svcs, fakeResolver())
}

// TestCheckEnvFiles: metad -n reads each env_file as a start would and
// reports what would fail; Parse and Load, which a start and a reload
// use, do not.
func TestCheckEnvFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.env")
	bad := filepath.Join(dir, "bad.env")
	missing := filepath.Join(dir, "missing.env")
	os.WriteFile(good, []byte("A=1\n"), 0o644)
	os.WriteFile(bad, []byte("A=1\n1B=2\nC=\"x\n"), 0o644)
	conf := filepath.Join(dir, "metad.conf")
	src := "a daemon env_file=" + good + " env_file=-" + missing + " sh\n" +
		"b daemon env_file=" + missing + " sh\n" +
		"c daemon max=1 env_file=" + bad + " sh\n" +
		"d daemon env_file=" + dir + " sh\n"
	os.WriteFile(conf, []byte(src), 0o644)

	if _, err := Parse(conf, []byte(src), fakeResolver()); err != nil {
		t.Errorf("Parse: got %v, want no error", err)
	}
	if _, err := Load(conf, fakeResolver()); err != nil {
		t.Errorf("Load: got %v, want no error", err)
	}
	_, _, err := Check(conf, nil, fakeResolver())
	want := conf + `:2:10: cannot read env file "` + missing + `": no such file or directory` + "\n" +
		conf + ":3:16: env_file " + bad + `:2:1: invalid name "1B": use letters, digits and _, not starting with a digit` + "\n" +
		conf + ":3:16: env_file " + bad + ":3:3: unterminated double quote\n" +
		conf + `:4:10: cannot read env file "` + dir + `": not a regular file`
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 4 {
		t.Errorf("got %T %v, want an ErrorList of 4", err, err)
	}
}
