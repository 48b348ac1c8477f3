package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	tests := []struct {
		name string
		bin  string
		args []string
		want string
	}{
		{"metad -V", "metad", []string{"-V"}, "metad test-build\n"},
		{"metac -V through the symlink", "metac", []string{"-V"}, "metac test-build\n"},
		{"metad ctl -V", "metad", []string{"ctl", "-V"}, "metac test-build\n"},
	}
	for _, tt := range tests {
		bin := metadBin
		if tt.bin == "metac" {
			bin = metacBin
		}
		out, errOut, status := runBin(t, bin, tt.args...)
		if status != 0 || out != tt.want {
			t.Errorf("%s: got status %d, stdout %q, stderr %q; want 0 and %q", tt.name, status, out, errOut, tt.want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		bin  string
		args []string
		want string // in the one-line message
	}{
		{"unknown flag", "metad", []string{"-x"}, "-x"},
		{"bad stop timeout", "metad", []string{"--stop-timeout", "soon"}, "stop-timeout"},
		{"bad log format", "metad", []string{"--log-format", "xml"}, "log-format"},
		{"command without --", "metad", []string{"sh"}, "--"},
		{"metac unknown flag", "metac", []string{"-x"}, "-x"},
		{"metad ctl unknown flag", "metad", []string{"ctl", "-x"}, "-x"},
	}
	for _, tt := range tests {
		bin := metadBin
		if tt.bin == "metac" {
			bin = metacBin
		}
		_, errOut, status := runBin(t, bin, tt.args...)
		lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
		if status != 2 || len(lines) != 1 || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "-h") {
			t.Errorf("%s: got status %d, stderr %q; want 2 and one line naming %q and pointing to -h", tt.name, status, errOut, tt.want)
		}
	}
}

func writeConf(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "metad.conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const goodConf = `# a valid config
ticker daemon watch_output env=GREETING=hi /bin/sh -c 'echo "$GREETING"; exec sleep 1000'
hourly daemon min=0 max=1 period=1h crash=5s backoff=1m stop=INT sleep 1
echo   stream port=7007 addr=127.0.0.1 max=4 /bin/cat
sock   listen port=7008 addr=::1 disabled \
       /bin/sleep 1000
`

func TestCheckGoodConfig(t *testing.T) {
	path := writeConf(t, goodConf)
	out, errOut, status := runBin(t, metadBin, "-n", "-f", path)
	if status != 0 || out != "" || errOut != "" {
		t.Errorf("got status %d, stdout %q, stderr %q; want 0 and no output", status, out, errOut)
	}
}

func TestCheckReportsEveryError(t *testing.T) {
	conf := "good daemon /bin/true\n" +
		"web daemon mx=3 /bin/true\n" +
		"web stream port=80 /bin/cat\n" +
		"x daemon min=5 max=2 /bin/true\n" +
		"y stream /bin/cat\n" +
		"z daemon /nonexistent/prog\n" +
		"u daemon user=no-such-user-here /bin/true\n"
	path := writeConf(t, conf)
	out, errOut, status := runBin(t, metadBin, "-n", "-f", path)
	if status != 1 || out != "" {
		t.Fatalf("got status %d, stdout %q; want 1 and no stdout", status, out)
	}
	lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
	want := []string{
		path + ":2:12: unknown option \"mx\"",
		path + ":3:1: duplicate service \"web\"",
		path + ":4:",
		path + ":5:",
		path + ":6:10: ",
		path + ":7:10: ",
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d error lines, want %d:\n%s", len(lines), len(want), errOut)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("error %d: got %q, want it to start with %q", i+1, lines[i], want[i])
		}
	}
}

func TestCheckVerboseRoundTrip(t *testing.T) {
	path := writeConf(t, goodConf)
	out, errOut, status := runBin(t, metadBin, "-n", "-v", "-f", path)
	if status != 0 || errOut != "" {
		t.Fatalf("got status %d, stderr %q; want 0 and nothing on stderr", status, errOut)
	}
	for _, want := range []string{"ticker", "backoff=", "crash=", "max=4", "port=7007"} {
		if !strings.Contains(out, want) {
			t.Errorf("canonical output lacks %q:\n%s", want, out)
		}
	}
	again := writeConf(t, out)
	out2, errOut, status := runBin(t, metadBin, "-n", "-v", "-f", again)
	if status != 0 || out2 != out {
		t.Errorf("re-reading the canonical form: got status %d, stderr %q, output\n%s\nwant 0 and the same output\n%s", status, errOut, out2, out)
	}
}

func TestCheckMissingFile(t *testing.T) {
	_, errOut, status := runBin(t, metadBin, "-n", "-f", "/nonexistent/metad.conf")
	if status != 1 || !strings.Contains(errOut, "/nonexistent/metad.conf") {
		t.Errorf("got status %d, stderr %q; want 1 and the file named", status, errOut)
	}
}
