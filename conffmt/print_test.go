package conffmt

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// roundTripConfig uses every class, every option and every kind of
// quoting.
const roundTripConfig = `# every class, every option
web daemon min=2 max=4 period=1h30m dir=/srv user=www:adm watch_output disabled \
    env=A=1 'env=B=two words' env=C= crash=500ms backoff=2m stop=sigquit argv0=-nginx \
    env_file=/etc/web.env env_file=-/etc/web.local umask=27 nice=-5 limit=core=infinity limit=nofile=1024:4096 \
    nginx -g 'daemon off;' "it's" '' \#x a=b '#' $HOME ~ "tab	here"
job daemon min=0 max=1 period=30 pidfile=/run/job.pid user=1234 needs=web after=hello,web \
    restart=on-failure retries=3 on_failure=shutdown on_success=shutdown stop_timeout=1m \
    ready=exec:"test -e '/run/job ready'" ready_timeout=5 sh -c 'date; sleep 1'
hello listen min=1 port=http addr=127.0.0.1 backlog=5 user=root ready=fd:4 check=http://[::1]:80/health?x=1 \
    check_every=1m check_timeout=2s check_fails=1 watch_output quiet=30s /bin/sh
echo stream max=3 port=daytime addr=fe80::1%eth0 stop=40 enabled=no limit=as=1G:infinity limit=cpu=1h \
    per_source=2 rate=10/1 only_from=10.1.2.3/8,::ffff:192.0.2.1,2001:db8::/32,10.0.0.0/8 cat
plain stream port=7 cat
note daemon ready=notify watchdog=10s check=tcp:[::1]:http needs=plain,job after=job sh
`

func TestPrint(t *testing.T) {
	svcs, err := Parse("t.conf", []byte(roundTripConfig), fakeResolver())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Print(&b, svcs); err != nil {
		t.Fatal(err)
	}
	want := `web daemon min=2 max=4 period=1h30m dir=/srv user=www:adm watch_output=yes enabled=no env=A=1 'env=B=two words' env=C= env_file=/etc/web.env env_file=-/etc/web.local crash=500ms backoff=2m stop=QUIT argv0=-nginx umask=0027 nice=-5 limit=nofile=1024:4096 limit=core=infinity ready=started ready_timeout=1m30s restart=always retries=0 on_failure=none on_success=none nginx -g 'daemon off;' it\'s '' \#x a=b \# \$HOME \~ 'tab	here'
job daemon min=0 max=1 period=30s dir=/ user=1234 pidfile=/run/job.pid watch_output=no enabled=yes crash=10s backoff=5m stop=TERM argv0=sh 'ready=exec:test -e '\''/run/job ready'\' ready_timeout=5s after=hello needs=web restart=on-failure retries=3 on_failure=shutdown on_success=shutdown stop_timeout=1m sh -c 'date; sleep 1'
hello listener min=1 max=1 port=80 addr=127.0.0.1 backlog=5 dir=/ user=root watch_output=yes enabled=yes crash=10s backoff=5m stop=TERM argv0=/bin/sh ready=fd:4 ready_timeout=1m30s retries=0 on_failure=none on_success=none check=http://\[::1]:80/health\?x=1 check_every=1m check_timeout=2s check_fails=1 quiet=30s /bin/sh
echo stream max=3 port=13 addr=fe80::1%eth0 backlog=128 dir=/ watch_output=no enabled=no crash=10s backoff=5m stop=40 argv0=cat limit=as=1G:infinity limit=cpu=3600 ready=started ready_timeout=1m30s retries=0 on_failure=none on_success=none per_source=2 rate=10/1s only_from=10.0.0.0/8,192.0.2.1/32,2001:db8::/32 cat
plain stream max=128 port=7 backlog=128 dir=/ watch_output=no enabled=yes crash=10s backoff=5m stop=TERM argv0=cat ready=started ready_timeout=1m30s retries=0 on_failure=none on_success=none cat
note daemon min=1 max=1 period=0s dir=/ watch_output=no enabled=yes crash=10s backoff=5m stop=TERM argv0=sh ready=notify ready_timeout=1m30s after=job needs=plain,job restart=always retries=0 on_failure=none on_success=none check=tcp:\[::1]:http check_every=10s check_timeout=5s check_fails=3 watchdog=10s sh
`
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	checkRoundTrip(t, svcs, fakeResolver())
}

// checkRoundTrip checks that printing svcs and parsing the text with r
// gives svcs again, Pos aside.
func checkRoundTrip(t *testing.T, svcs []Service, r *Resolver) {
	t.Helper()
	var b bytes.Buffer
	if err := Print(&b, svcs); err != nil {
		t.Fatalf("cannot print %+v: %v", svcs, err)
	}
	again, err := Parse("printed.conf", b.Bytes(), r)
	if err != nil {
		t.Fatalf("cannot parse printed config:\n%s\n%v", b.String(), err)
	}
	if got, want := withoutPos(again), withoutPos(svcs); !reflect.DeepEqual(got, want) {
		t.Fatalf("printed config\n%s\nparses to\n%+v\nwant\n%+v", b.String(), got, want)
	}
}

func withoutPos(svcs []Service) []Service {
	out := make([]Service, len(svcs))
	for i, s := range svcs {
		s.Pos = Pos{}
		out[i] = s
	}
	return out
}

func TestPrintRefuses(t *testing.T) {
	good := defaults("web", Daemon, "sh")
	tests := []struct {
		name string
		svc  Service
		want string
	}{
		{"bad name", with(good, func(s *Service) { s.Name = "a b" }), `cannot print service "a b": invalid name`},
		{"bad class", with(good, func(s *Service) { s.Class = 0 }), `cannot print service "web": invalid class class(0)`},
		{"option program", with(good, func(s *Service) { s.Program = "a=b" }), `cannot print service "web": program "a=b" would not read as a program`},
		{"flag program", with(good, func(s *Service) { s.Program = "enabled" }), `cannot print service "web": program "enabled" would not read as a program`},
		{"empty program", with(good, func(s *Service) { s.Program = "" }), `cannot print service "web": program "" would not read as a program`},
		{"newline", with(good, func(s *Service) { s.Args = []string{"a\nb"} }), `cannot print service "web": word "a\nb" holds a newline or a NUL byte`},
		{"NUL", with(good, func(s *Service) { s.Env = []string{"A=\x00"} }), `cannot print service "web": word "env=A=\x00" holds a newline or a NUL byte`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			err := Print(&b, []Service{good, tt.svc})
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v, want %s", err, tt.want)
			}
			if b.Len() != 0 {
				t.Errorf("got output %q, want none", b.String())
			}
		})
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestPrintWriteError(t *testing.T) {
	err := Print(failingWriter{}, []Service{defaults("web", Daemon, "sh")})
	if err == nil || err.Error() != "cannot write config: disk full" {
		t.Errorf("got %v, want cannot write config: disk full", err)
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// prints to text that parses back to the same services.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		roundTripConfig,
		"",
		"web daemon sh",
		"web daemon sh 'unterminated",
		"web daemon sh \"a\\\nb\" c\\\nd \\",
		"a stream port=80 sh\nb stream port=80 sh",
		"x listener min=1 max=1 port=1 addr=::ffff:1.2.3.4 backlog=1 '#arg' \\#\\ x",
		"d daemon env=A=B 'env=C=D E' stop=RTMIN crash=1.5h backoff=0.001s sh",
		"# comment\n\n\tweb\tdaemon\t\\\n\tdisabled\tsh\t#\t\n",
		"web daemon \x00 sh",
		"web deamon mx=1 enabled disabled=1 user= user=a:b: sh",
		"p daemon env_file=/a env_file=-/b umask=027 nice=-5 limit=nofile=1024:4096 limit=as=1G limit=cpu=1h limit=core=infinity sh",
		"p stream port=1 limit=nofile=1:0 limit=nofles=1 limit=as=1P umask=8 nice=+-1 env_file=- sh",
		"a daemon ready=notify watchdog=1s needs=b after=c,b restart=never retries=2 on_failure=shutdown stop_timeout=3 sh\nb daemon after=c sh\nc daemon sh",
		"a daemon after=b sh\nb daemon needs=c sh\nc daemon after=a,a sh\nd daemon after=d,e sh",
		"l listener port=1 ready=fd:3 ready=tcp:[::1]:x check=http://h:1/p?q check_every=1 check_timeout=2 check_fails=0 quiet=1 sh",
		"s stream port=1 ready=exec:'a \"b' check=exec:\"c 'd\" per_source=1 rate=1/1ms only_from=::ffff:1.2.3.4/120,1.2.3.4,::/0 sh",
		"s stream port=1 rate=0/0 only_from=1.2.3.4/33,fe80::1%x check=https://:1/ check=tcp::1 ready=fd: sh",
	} {
		f.Add([]byte(seed))
	}
	r := acceptingResolver()
	f.Fuzz(func(t *testing.T, src []byte) {
		svcs, err := Parse("fuzz.conf", src, r)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("got %v, want a non-empty ErrorList", err)
			}
			if strings.Count(err.Error(), "\n") != len(list)-1 {
				t.Fatalf("got an error message with a newline inside: %q", err)
			}
			if strings.Contains(err.Error(), "cannot split word") {
				t.Fatalf("the scanner and shellquote disagree: %v", err)
			}
			return
		}
		checkRoundTrip(t, svcs, r)
	})
}
