package notify

import (
	"bytes"
	"math"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Message
	}{
		{"", Message{}},
		{"\n\r\n", Message{}},
		{"READY=1", Message{Ready: true}},
		{"READY=1\n", Message{Ready: true}},
		{"READY=1\x00", Message{Ready: true}}, // one trailing NUL is allowed
		{"\r\n\nREADY=1\r\r", Message{Ready: true}},
		{"READY=0", Message{}},
		{"READY=1 ", Message{}},
		{" READY=1", Message{}},
		{"ready=1", Message{}},
		{"READY=0\nREADY=1", Message{Ready: true}}, // flags count wherever they stand
		{"STOPPING=1\nRELOADING=1\nREADY=1", Message{Ready: true, Stopping: true, Reloading: true}},
		{"READY=1\nSTATUS=Serving 3 clients", Message{Ready: true, Status: "Serving 3 clients", HasStatus: true}},
		{"STATUS=", Message{HasStatus: true}},
		{"STATUS=a=b", Message{Status: "a=b", HasStatus: true}},
		{"STATUS=first\nSTATUS=second", Message{Status: "first", HasStatus: true}},
		{"STATUS=bad \xff", Message{HasStatus: true}}, // not UTF-8: cleared
		{"STATUS=a\\\nb", Message{Status: "a\nb", HasStatus: true}},
		{"STATUS=C:\\\\dir", Message{Status: "C:\\dir", HasStatus: true}},
		{"STATUS=a\\b", Message{Status: "ab", HasStatus: true}},
		{"STATUS=\"quoted\" 'too'", Message{Status: "\"quoted\" 'too'", HasStatus: true}},
		{"STAT\\US=x", Message{Status: "x", HasStatus: true}},

		{"MAINPID=42", Message{MainPID: 42}},
		{"MAINPID= \t42", Message{MainPID: 42}},
		{"MAINPID=+42", Message{MainPID: 42}},
		{"MAINPID=0x2a", Message{MainPID: 42}},
		{"MAINPID=052", Message{MainPID: 42}},
		{"MAINPID=0o52", Message{MainPID: 42}},
		{"MAINPID=0b101010", Message{MainPID: 42}},
		{"MAINPID=2147483647", Message{MainPID: math.MaxInt32}},
		{"MAINPID=2147483648", Message{}},
		{"MAINPID=abc", Message{}},
		{"MAINPID=", Message{}},
		{"MAINPID=0", Message{}},
		{"MAINPID=-1", Message{}},
		{"MAINPID=-0", Message{}},
		{"MAINPID=42 ", Message{}},
		{"MAINPID=09", Message{}},
		{"MAINPID=0x", Message{}},
		{"MAINPID=18446744073709551616", Message{}},
		{"MAINPID=abc\nMAINPID=42", Message{}}, // the first one counts, even malformed
		{"MAINPID=42\nMAINPID=43", Message{MainPID: 42}},

		{"WATCHDOG=1", Message{Watchdog: WatchdogPing}},
		{"WATCHDOG=trigger", Message{Watchdog: WatchdogTrigger}},
		{"WATCHDOG=2", Message{}},
		{"WATCHDOG=x\nWATCHDOG=1", Message{}},
		{"WATCHDOG_USEC=5000000", Message{WatchdogTimeout: 5 * time.Second, HasWatchdogTimeout: true}},
		{"WATCHDOG_USEC=5s", Message{}},

		{"EXTEND_TIMEOUT_USEC=0", Message{HasExtendTimeout: true}},
		{"EXTEND_TIMEOUT_USEC=-0", Message{HasExtendTimeout: true}},
		{"EXTEND_TIMEOUT_USEC=1500", Message{ExtendTimeout: 1500 * time.Microsecond, HasExtendTimeout: true}},
		{"EXTEND_TIMEOUT_USEC=18446744073709551615", Message{ExtendTimeout: math.MaxInt64, HasExtendTimeout: true}},
		{"EXTEND_TIMEOUT_USEC=18446744073709551616", Message{}},
		{"EXTEND_TIMEOUT_USEC=-1", Message{}},
		{"EXTEND_TIMEOUT_USEC=1.5", Message{}},

		{"ERRNO=0", Message{HasErrno: true}},
		{"ERRNO=2", Message{Errno: syscall.ENOENT, HasErrno: true}},
		{"ERRNO=EINVAL", Message{Errno: syscall.EINVAL, HasErrno: true}},
		{"ERRNO=EWOULDBLOCK", Message{Errno: syscall.EAGAIN, HasErrno: true}},
		{"ERRNO=4095", Message{Errno: 4095, HasErrno: true}},
		{"ERRNO=4096", Message{}},
		{"ERRNO=-1", Message{}},
		{"ERRNO=einval", Message{}},
		{"ERRNO=EFOO", Message{}},

		{"FDSTORE=1\nFDNAME=x\nBARRIER=1\nX_FOO=bar\nno equals sign", Message{}},
	} {
		got, err := Parse([]byte(tc.in))
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Parse(%q):\ngot  %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, in := range []string{
		"READY=1\x00STATUS=x", // NUL inside
		"\x00\x00",
		"READY=1\nSTATUS=x\\", // a trailing backslash: systemd cannot split it
		"\\",
	} {
		if m, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q): got %+v, want an error", in, m)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"READY=1\nSTATUS=up\nMAINPID=42",
		"WATCHDOG=1\nWATCHDOG_USEC=0x10\nEXTEND_TIMEOUT_USEC=0o7",
		"ERRNO=EPERM\r\rSTOPPING=1\\\n",
		"MAINPID= -0b1\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if m != (Message{}) {
				t.Errorf("Parse(%q): got %+v with error %v, want the zero Message", b, m, err)
			}
			return
		}
		switch {
		case m.MainPID < 0:
			t.Errorf("Parse(%q): got MAINPID %d", b, m.MainPID)
		case !utf8.ValidString(m.Status), m.Status != "" && !m.HasStatus:
			t.Errorf("Parse(%q): got status %q (given %v)", b, m.Status, m.HasStatus)
		case m.Errno > errnoMax, m.Errno != 0 && !m.HasErrno:
			t.Errorf("Parse(%q): got errno %d (given %v)", b, m.Errno, m.HasErrno)
		case m.WatchdogTimeout < 0, m.ExtendTimeout < 0:
			t.Errorf("Parse(%q): got a negative duration: %+v", b, m)
		}
		// A separator more at the end changes nothing, unless it would
		// be escaped or follow the one NUL allowed.
		if n := len(b); n > 0 && (b[n-1] == '\\' || b[n-1] == 0) {
			return
		}
		for _, sep := range []string{"\n", "\r"} {
			m2, err := Parse(append(bytes.Clone(b), sep...))
			if err != nil || m2 != m {
				t.Errorf("Parse(%q+%q): got %+v, %v, want %+v", b, sep, m2, err, m)
			}
		}
	})
}
