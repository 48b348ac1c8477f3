package conffmt

import (
	"net/netip"
	"testing"
	"time"
)

func tcpProbe(text, addrPort string) Probe {
	return Probe{Kind: ProbeTCP, Addr: netip.MustParseAddrPort(addrPort), Text: text}
}

func prefixes(ps ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

func TestParseLifecycleOptions(t *testing.T) {
	daemon := defaults("d", Daemon, "sh")
	listener := defaults("l", Listener, "sh")
	stream := defaults("s", Stream, "sh")
	// withCheck is daemon with the check p and the defaults of its options.
	withCheck := func(p Probe) Service {
		return with(daemon, func(s *Service) {
			s.Check, s.CheckEvery, s.CheckTimeout, s.CheckFails = p, 10*time.Second, 5*time.Second, 3
		})
	}
	tests := []struct {
		name, src string
		want      Service
	}{
		// ready= and ready_timeout=
		{"ready started", "d daemon ready=started sh", daemon},
		{"ready notify", "d daemon ready=notify sh", with(daemon, func(s *Service) { s.Ready = Ready{Kind: ReadyNotify} })},
		{"ready fd", "d daemon ready=fd:3 sh", with(daemon, func(s *Service) { s.Ready = Ready{Kind: ReadyFD, FD: 3} })},
		{"ready fd largest", "d daemon ready=fd:1000000 sh", with(daemon, func(s *Service) { s.Ready = Ready{Kind: ReadyFD, FD: 1000000} })},
		{"ready tcp port", "d daemon ready=tcp:8080 sh", with(daemon, func(s *Service) {
			s.Ready = Ready{Kind: ReadyTCP, Probe: tcpProbe("tcp:8080", "127.0.0.1:8080")}
		})},
		{"ready tcp port name", "d daemon ready=tcp:http sh", with(daemon, func(s *Service) {
			s.Ready = Ready{Kind: ReadyTCP, Probe: tcpProbe("tcp:http", "127.0.0.1:80")}
		})},
		{"ready tcp IPv4", "d daemon ready=tcp:10.0.0.1:80 sh", with(daemon, func(s *Service) {
			s.Ready = Ready{Kind: ReadyTCP, Probe: tcpProbe("tcp:10.0.0.1:80", "10.0.0.1:80")}
		})},
		{"ready tcp IPv6", "d daemon ready=tcp:[::1]:8080 sh", with(daemon, func(s *Service) {
			s.Ready = Ready{Kind: ReadyTCP, Probe: tcpProbe("tcp:[::1]:8080", "[::1]:8080")}
		})},
		{"ready tcp IPv6 zone and name", "d daemon ready=tcp:[fe80::1%eth0]:daytime sh", with(daemon, func(s *Service) {
			s.Ready = Ready{Kind: ReadyTCP, Probe: tcpProbe("tcp:[fe80::1%eth0]:daytime", "[fe80::1%eth0]:13")}
		})},
		{"ready exec", `d daemon 'ready=exec:test -e "/run/a b"' sh`, with(daemon, func(s *Service) {
			s.Ready = Ready{Kind: ReadyExec, Probe: Probe{Kind: ProbeExec, Argv: []string{"test", "-e", "/run/a b"}, Text: `exec:test -e "/run/a b"`}}
		})},
		{"ready exec one word", "d daemon ready=exec:/bin/true sh", with(daemon, func(s *Service) {
			s.Ready = Ready{Kind: ReadyExec, Probe: Probe{Kind: ProbeExec, Argv: []string{"/bin/true"}, Text: "exec:/bin/true"}}
		})},
		{"ready listener", "l listener port=80 ready=notify sh", with(listener, func(s *Service) { s.Ready = Ready{Kind: ReadyNotify} })},
		{"ready listener fd 4", "l listener port=80 ready=fd:4 sh", with(listener, func(s *Service) { s.Ready = Ready{Kind: ReadyFD, FD: 4} })},
		{"ready stream", "s stream port=80 ready=started sh", stream},
		{"ready_timeout", "d daemon ready_timeout=5 sh", with(daemon, func(s *Service) { s.ReadyTimeout = 5 * time.Second })},
		{"ready_timeout ms", "d daemon ready_timeout=500ms sh", with(daemon, func(s *Service) { s.ReadyTimeout = 500 * time.Millisecond })},

		// restart=, retries=, on_failure=, on_success=, stop_timeout=
		{"restart always", "d daemon restart=always sh", daemon},
		{"restart on-failure", "d daemon restart=on-failure sh", with(daemon, func(s *Service) { s.Restart = RestartOnFailure })},
		{"restart never", "d daemon restart=never sh", with(daemon, func(s *Service) { s.Restart = RestartNever })},
		{"retries 0", "d daemon retries=0 sh", daemon},
		{"retries", "d daemon retries=3 sh", with(daemon, func(s *Service) { s.Retries = 3 })},
		{"retries stream", "s stream port=80 retries=3 sh", with(stream, func(s *Service) { s.Retries = 3 })},
		{"on_failure", "d daemon on_failure=shutdown sh", with(daemon, func(s *Service) { s.OnFailure = ActionShutdown })},
		{"on_failure none", "d daemon on_failure=none sh", daemon},
		{"on_success", "l listener port=80 on_success=shutdown sh", with(listener, func(s *Service) { s.OnSuccess = ActionShutdown })},
		{"stop_timeout", "d daemon stop_timeout=30 sh", with(daemon, func(s *Service) { s.StopTimeout = 30 * time.Second })},
		{"stop_timeout duration", "s stream port=80 stop_timeout=1m30s sh", with(stream, func(s *Service) { s.StopTimeout = 90 * time.Second })},

		// check= and its options
		{"check tcp", "d daemon check=tcp:80 sh", withCheck(tcpProbe("tcp:80", "127.0.0.1:80"))},
		{"check tcp address", "d daemon check=tcp:[2001:db8::1]:http sh", withCheck(tcpProbe("tcp:[2001:db8::1]:http", "[2001:db8::1]:80"))},
		{"check http", "d daemon check=http://localhost:8080/health sh", withCheck(Probe{Kind: ProbeHTTP, URL: "http://localhost:8080/health", Text: "http://localhost:8080/health"})},
		{"check https", "d daemon check=https://[::1]/ sh", withCheck(Probe{Kind: ProbeHTTP, URL: "https://[::1]/", Text: "https://[::1]/"})},
		{"check exec", `d daemon "check=exec:curl -fs 'http://x/'" sh`, withCheck(Probe{Kind: ProbeExec, Argv: []string{"curl", "-fs", "http://x/"}, Text: "exec:curl -fs 'http://x/'"})},
		{"check options", "d daemon check_every=1m check=tcp:80 check_timeout=500ms check_fails=1 sh", with(withCheck(tcpProbe("tcp:80", "127.0.0.1:80")), func(s *Service) {
			s.CheckEvery, s.CheckTimeout, s.CheckFails = time.Minute, 500*time.Millisecond, 1
		})},

		// watchdog= and quiet=
		{"watchdog", "d daemon watchdog=30s ready=notify sh", with(daemon, func(s *Service) {
			s.Ready, s.Watchdog = Ready{Kind: ReadyNotify}, 30*time.Second
		})},
		{"quiet", "d daemon quiet=1m watch_output sh", with(daemon, func(s *Service) { s.Watch, s.Quiet = true, time.Minute })},

		// stream admission
		{"per_source", "s stream port=80 per_source=4 sh", with(stream, func(s *Service) { s.PerSource = 4 })},
		{"rate", "s stream port=80 rate=10/1s sh", with(stream, func(s *Service) { s.Rate = Rate{N: 10, Per: time.Second} })},
		{"rate minute", "s stream port=80 rate=100/1m sh", with(stream, func(s *Service) { s.Rate = Rate{N: 100, Per: time.Minute} })},
		{"rate seconds", "s stream port=80 rate=5/30 sh", with(stream, func(s *Service) { s.Rate = Rate{N: 5, Per: 30 * time.Second} })},
		{"rate ms", "s stream port=80 rate=1/250ms sh", with(stream, func(s *Service) { s.Rate = Rate{N: 1, Per: 250 * time.Millisecond} })},
		{"only_from CIDR", "s stream port=80 only_from=10.0.0.0/8 sh", with(stream, func(s *Service) { s.OnlyFrom = prefixes("10.0.0.0/8") })},
		{"only_from addresses", "s stream port=80 only_from=192.0.2.7,2001:db8::1 sh", with(stream, func(s *Service) {
			s.OnlyFrom = prefixes("192.0.2.7/32", "2001:db8::1/128")
		})},
		{"only_from masked", "s stream port=80 only_from=10.1.2.3/8,2001:db8:1::1/32 sh", with(stream, func(s *Service) {
			s.OnlyFrom = prefixes("10.0.0.0/8", "2001:db8::/32")
		})},
		{"only_from IPv4-mapped", "s stream port=80 only_from=::ffff:10.0.0.0/104,::ffff:192.0.2.7,::ffff:0:0/96 sh", with(stream, func(s *Service) {
			s.OnlyFrom = prefixes("10.0.0.0/8", "192.0.2.7/32", "0.0.0.0/0")
		})},
		{"only_from duplicates", "s stream port=80 only_from=10.0.0.0/8,10.9.9.9/8,::ffff:10.0.0.0/104,::1,::1/128 sh", with(stream, func(s *Service) {
			s.OnlyFrom = prefixes("10.0.0.0/8", "::1/128")
		})},
		{"only_from every address", "s stream port=80 only_from=0.0.0.0/0,::/0 sh", with(stream, func(s *Service) {
			s.OnlyFrom = prefixes("0.0.0.0/0", "::/0")
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkParsed(t, tt.src, tt.want) })
	}
}

func TestParseLifecycleOptionErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		// ready= and ready_timeout=
		{"ready unknown", "web daemon ready=up sh", `1:12: invalid ready "up": want started, notify, fd:N, tcp:[ADDR:]PORT or exec:COMMAND`},
		{"ready http", "web daemon ready=http://x/ sh", `1:12: invalid ready "http://x/": want started, notify, fd:N, tcp:[ADDR:]PORT or exec:COMMAND`},
		{"ready empty", "web daemon ready= sh", `1:12: invalid ready "": want started, notify, fd:N, tcp:[ADDR:]PORT or exec:COMMAND`},
		{"ready case", "web daemon ready=Notify sh", `1:12: invalid ready "Notify": want started, notify, fd:N, tcp:[ADDR:]PORT or exec:COMMAND`},
		{"ready fd 2", "web daemon ready=fd:2 sh", `1:12: invalid ready "fd:2": want fd:N, N a descriptor from 3 to 1000000`},
		{"ready fd empty", "web daemon ready=fd: sh", `1:12: invalid ready "fd:": want fd:N, N a descriptor from 3 to 1000000`},
		{"ready fd word", "web daemon ready=fd:x sh", `1:12: invalid ready "fd:x": want fd:N, N a descriptor from 3 to 1000000`},
		{"ready fd too big", "web daemon ready=fd:1000001 sh", `1:12: invalid ready "fd:1000001": want fd:N, N a descriptor from 3 to 1000000`},
		{"ready fd listener", "web listener port=80 ready=fd:3 sh", `1:22: invalid ready "fd:3": a listener's fd 3 is its listening socket; want fd:4 or more`},
		{"ready stream notify", "web stream port=80 ready=notify sh", `1:20: invalid ready "notify": a stream service is ready once its socket is bound, so only ready=started applies`},
		{"ready stream tcp", "web stream port=80 ready=tcp:80 sh", `1:20: invalid ready "tcp:80": a stream service is ready once its socket is bound, so only ready=started applies`},
		{"ready tcp empty", "web daemon ready=tcp: sh", `1:12: invalid ready "tcp:": invalid port "": want 1 to 65535 or a name from /etc/services`},
		{"ready tcp 0", "web daemon ready=tcp:0 sh", `1:12: invalid ready "tcp:0": invalid port "0": want 1 to 65535 or a name from /etc/services`},
		{"ready tcp too big", "web daemon ready=tcp:[::1]:65536 sh", `1:12: invalid ready "tcp:[::1]:65536": invalid port "65536": want 1 to 65535 or a name from /etc/services`},
		{"ready tcp unknown port", "web daemon ready=tcp:htp sh", `1:12: invalid ready "tcp:htp": unknown port "htp"`},
		{"ready tcp host name", "web daemon ready=tcp:localhost:80 sh", `1:12: invalid ready "tcp:localhost:80": want tcp:[ADDR:]PORT, ADDR an IP address, IPv6 in brackets (tcp:[::1]:8080)`},
		{"ready tcp IPv6 bare", "web daemon ready=tcp:::1:80 sh", `1:12: invalid ready "tcp:::1:80": want tcp:[ADDR:]PORT, ADDR an IP address, IPv6 in brackets (tcp:[::1]:8080)`},
		{"ready tcp empty address", "web daemon ready=tcp::80 sh", `1:12: invalid ready "tcp::80": want tcp:[ADDR:]PORT, ADDR an IP address, IPv6 in brackets (tcp:[::1]:8080)`},
		{"ready tcp open bracket", "web daemon ready=tcp:[::1:80 sh", `1:12: invalid ready "tcp:[::1:80": want tcp:[ADDR:]PORT, ADDR an IP address, IPv6 in brackets (tcp:[::1]:8080)`},
		{"ready exec empty", "web daemon ready=exec: sh", `1:12: invalid ready "exec:": want exec:COMMAND [ARG...], the command not empty`},
		{"ready exec blank", "web daemon 'ready=exec:  ' sh", `1:12: invalid ready "exec:  ": want exec:COMMAND [ARG...], the command not empty`},
		{"ready exec quote", `web daemon "ready=exec:test 'x" sh`, `1:12: invalid ready "exec:test 'x": COMMAND has an unterminated quote or a backslash at its end`},
		{"ready_timeout 0", "web daemon ready_timeout=0 sh", `1:12: invalid ready_timeout "0": must be more than 0`},
		{"ready_timeout word", "web daemon ready_timeout=soon sh", `1:12: invalid ready_timeout "soon": want whole seconds (30) or a duration (500ms, 1h30m)`},

		// after= and needs=, on their own
		{"after empty", "web daemon after= sh", `1:12: invalid after "": want NAME[,NAME...], each name made of letters, digits, "_", "-" and "."`},
		{"after empty name", "web daemon after=a,,b sh", `1:12: invalid after "a,,b": want NAME[,NAME...], each name made of letters, digits, "_", "-" and "."`},
		{"after trailing comma", "web daemon after=a, sh", `1:12: invalid after "a,": want NAME[,NAME...], each name made of letters, digits, "_", "-" and "."`},
		{"needs bad name", "web daemon needs=a/b sh", `1:12: invalid needs "a/b": want NAME[,NAME...], each name made of letters, digits, "_", "-" and "."`},
		{"needs spaces", "web daemon 'needs=a, b' sh", `1:12: invalid needs "a, b": want NAME[,NAME...], each name made of letters, digits, "_", "-" and "."`},
		{"needs twice", "web daemon needs=a,b,a sh", `1:12: invalid needs "a,b,a": "a" is named twice`},
		{"after given twice", "a daemon sh\nweb daemon after=a after=b sh", `2:20: duplicate option "after" (first given at 2:12)`},

		// restart=, retries=, on_failure=, on_success=, stop_timeout=
		{"restart unknown", "web daemon restart=on-abort sh", `1:12: invalid restart "on-abort": want always, on-failure or never`},
		{"restart underscore", "web daemon restart=on_failure sh", `1:12: invalid restart "on_failure": want always, on-failure or never`},
		{"restart listener", "web listener port=80 restart=never sh", `1:22: option "restart" does not apply to class listener`},
		{"restart stream", "web stream port=80 restart=never sh", `1:20: option "restart" does not apply to class stream`},
		{"check stream", "s stream port=80 check=tcp:80 sh", `1:18: option "check" does not apply to class stream`},
		{"retries negative", "web daemon retries=-1 sh", `1:12: invalid retries "-1": want a whole number from 0 to 1000000`},
		{"retries word", "web daemon retries=many sh", `1:12: invalid retries "many": want a whole number from 0 to 1000000`},
		{"on_failure unknown", "web daemon on_failure=restart sh", `1:12: invalid on_failure "restart": want none or shutdown`},
		{"on_success unknown", "web daemon on_success=exit sh", `1:12: invalid on_success "exit": want none or shutdown`},
		{"stop_timeout 0", "web daemon stop_timeout=0 sh", `1:12: invalid stop_timeout "0": must be more than 0`},
		{"stop_timeout negative", "web daemon stop_timeout=-1s sh", `1:12: invalid stop_timeout "-1s": must not be negative`},

		// check= and its options
		{"check unknown", "web daemon check=ping sh", `1:12: invalid check "ping": want tcp:[ADDR:]PORT, http://HOST:PORT/PATH, https://HOST:PORT/PATH or exec:COMMAND`},
		{"check ftp", "web daemon check=ftp://x/ sh", `1:12: invalid check "ftp://x/": want tcp:[ADDR:]PORT, http://HOST:PORT/PATH, https://HOST:PORT/PATH or exec:COMMAND`},
		{"check bad URL", "web daemon check=http://x:y/ sh", `1:12: invalid check "http://x:y/": want tcp:[ADDR:]PORT, http://HOST:PORT/PATH, https://HOST:PORT/PATH or exec:COMMAND`},
		{"check no host", "web daemon check=http:///health sh", `1:12: invalid check "http:///health": want a URL with a host, http://HOST:PORT/PATH`},
		{"check port only", "web daemon check=https://:8443/ sh", `1:12: invalid check "https://:8443/": want a URL with a host, https://HOST:PORT/PATH`},
		{"check opaque", "web daemon check=http:x sh", `1:12: invalid check "http:x": want a URL with a host, http://HOST:PORT/PATH`},
		{"check tcp", "web daemon check=tcp:x:80 sh", `1:12: invalid check "tcp:x:80": want tcp:[ADDR:]PORT, ADDR an IP address, IPv6 in brackets (tcp:[::1]:8080)`},
		{"check exec", "web daemon check=exec: sh", `1:12: invalid check "exec:": want exec:COMMAND [ARG...], the command not empty`},
		{"check_every without check", "web daemon check_every=1m sh", `1:12: check_every needs check=: without it there is no check to run`},
		{"check_timeout without check", "web daemon check_timeout=1s sh", `1:12: check_timeout needs check=: without it there is no check to run`},
		{"check_fails without check", "web daemon check_fails=2 sh", `1:12: check_fails needs check=: without it there is no check to run`},
		{"check_every 0", "web daemon check=tcp:80 check_every=0 sh", `1:25: invalid check_every "0": must be more than 0`},
		{"check_timeout 0", "web daemon check=tcp:80 check_timeout=0s sh", `1:25: invalid check_timeout "0s": must be more than 0`},
		{"check_fails 0", "web daemon check=tcp:80 check_fails=0 sh", `1:25: invalid check_fails "0": want a whole number from 1 to 1000000`},

		// watchdog= and quiet=
		{"watchdog without notify", "web daemon watchdog=10s sh", `1:12: watchdog needs ready=notify, not ready=started: the program sends WATCHDOG=1 to its notify socket`},
		{"watchdog with fd", "web daemon ready=fd:4 watchdog=10s sh", `1:23: watchdog needs ready=notify, not ready=fd:4: the program sends WATCHDOG=1 to its notify socket`},
		{"watchdog stream", "web stream port=80 watchdog=10s sh", `1:20: watchdog needs ready=notify, not ready=started: the program sends WATCHDOG=1 to its notify socket`},
		{"watchdog 0", "web daemon ready=notify watchdog=0 sh", `1:25: invalid watchdog "0": must be more than 0`},
		{"quiet without watch_output", "web daemon quiet=1m sh", `1:12: quiet needs watch_output: without it metad does not read the program's output`},
		{"quiet watch_output=no", "web daemon watch_output=no quiet=1m sh", `1:28: quiet needs watch_output: without it metad does not read the program's output`},
		{"quiet 0", "web daemon watch_output quiet=0 sh", `1:25: invalid quiet "0": must be more than 0`},

		// stream admission
		{"per_source daemon", "web daemon per_source=1 sh", `1:12: option "per_source" does not apply to class daemon`},
		{"per_source listener", "web listener port=80 per_source=1 sh", `1:22: option "per_source" does not apply to class listener`},
		{"per_source 0", "web stream port=80 per_source=0 sh", `1:20: invalid per_source "0": want a whole number from 1 to 1000000`},
		{"rate daemon", "web daemon rate=1/1s sh", `1:12: option "rate" does not apply to class daemon`},
		{"rate listener", "web listener port=80 rate=1/1s sh", `1:22: option "rate" does not apply to class listener`},
		{"rate no period", "web stream port=80 rate=10 sh", `1:20: invalid rate "10": want N/DUR, N connections from 1 to 1000000 per DUR more than 0 (10/1s, 100/1m)`},
		{"rate 0", "web stream port=80 rate=0/1s sh", `1:20: invalid rate "0/1s": want N/DUR, N connections from 1 to 1000000 per DUR more than 0 (10/1s, 100/1m)`},
		{"rate no count", "web stream port=80 rate=/1s sh", `1:20: invalid rate "/1s": want N/DUR, N connections from 1 to 1000000 per DUR more than 0 (10/1s, 100/1m)`},
		{"rate period 0", "web stream port=80 rate=10/0 sh", `1:20: invalid rate "10/0": want N/DUR, N connections from 1 to 1000000 per DUR more than 0 (10/1s, 100/1m)`},
		{"rate period word", "web stream port=80 rate=10/sec sh", `1:20: invalid rate "10/sec": want N/DUR, N connections from 1 to 1000000 per DUR more than 0 (10/1s, 100/1m)`},
		{"rate too many", "web stream port=80 rate=1000001/1s sh", `1:20: invalid rate "1000001/1s": want N/DUR, N connections from 1 to 1000000 per DUR more than 0 (10/1s, 100/1m)`},
		{"only_from daemon", "web daemon only_from=10.0.0.0/8 sh", `1:12: option "only_from" does not apply to class daemon`},
		{"only_from empty", "web stream port=80 only_from= sh", `1:20: invalid only_from "": "" is not an address or a CIDR prefix (10.0.0.0/8, 2001:db8::/32, 192.0.2.7)`},
		{"only_from host", "web stream port=80 only_from=10.0.0.0/8,localhost sh", `1:20: invalid only_from "10.0.0.0/8,localhost": "localhost" is not an address or a CIDR prefix (10.0.0.0/8, 2001:db8::/32, 192.0.2.7)`},
		{"only_from bits", "web stream port=80 only_from=10.0.0.0/33 sh", `1:20: invalid only_from "10.0.0.0/33": "10.0.0.0/33" is not an address or a CIDR prefix (10.0.0.0/8, 2001:db8::/32, 192.0.2.7)`},
		{"only_from zone", "web stream port=80 only_from=fe80::1%eth0 sh", `1:20: invalid only_from "fe80::1%eth0": "fe80::1%eth0" is not an address or a CIDR prefix (10.0.0.0/8, 2001:db8::/32, 192.0.2.7)`},
		{"only_from trailing comma", "web stream port=80 only_from=10.0.0.0/8, sh", `1:20: invalid only_from "10.0.0.0/8,": "" is not an address or a CIDR prefix (10.0.0.0/8, 2001:db8::/32, 192.0.2.7)`},

		// several at once, in column order
		{"several", "web stream port=80 ready=notify retries=x rate=1 sh",
			"1:20: invalid ready \"notify\": a stream service is ready once its socket is bound, so only ready=started applies\n" +
				"1:33: invalid retries \"x\": want a whole number from 0 to 1000000\n" +
				"1:43: invalid rate \"1\": want N/DUR, N connections from 1 to 1000000 per DUR more than 0 (10/1s, 100/1m)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, tt.src, tt.want) })
	}
}

func TestParseLifecycleStrings(t *testing.T) {
	tests := []struct {
		got  interface{ String() string }
		want string
	}{
		{Ready{}, "started"},
		{Ready{Kind: ReadyNotify}, "notify"},
		{Ready{Kind: ReadyFD, FD: 5}, "fd:5"},
		{Ready{Kind: ReadyTCP, Probe: Probe{Text: "tcp:80"}}, "tcp:80"},
		{RestartAlways, "always"},
		{RestartOnFailure, "on-failure"},
		{RestartNever, "never"},
		{Restart(9), "restart(9)"},
		{ActionNone, "none"},
		{ActionShutdown, "shutdown"},
		{Action(7), "action(7)"},
		{Rate{N: 10, Per: time.Minute}, "10/1m"},
	}
	for _, tt := range tests {
		if got := tt.got.String(); got != tt.want {
			t.Errorf("%#v: got %q, want %q", tt.got, got, tt.want)
		}
	}
}
