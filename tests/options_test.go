package tests

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// reportScript is a shell script that prints what its process started
// with: its limits, its status (Umask, Uid...), its nice value (field 19
// of /proc/PID/stat) and its environment.
const reportScript = `cat /proc/$$/limits /proc/$$/status; echo "Nice: $(cut -d' ' -f19 /proc/$$/stat)"; env`

// reportField returns the value of the line "KEY: value" of a report,
// blanks squeezed: "0027" for "Umask:\t0027".
func reportField(t *testing.T, report, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `:?\s+(.*?)\s*$`).FindStringSubmatch(report)
	if m == nil {
		t.Fatalf("no %q in the report:\n%s", key, report)
	}
	return strings.Join(strings.Fields(m[1]), " ")
}

// writeEnvFile writes an env file and returns its path.
func writeEnvFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "svc.env")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const envFileText = "# settings\nFROM_FILE=yes\n  BOTH = 'from the file'\nQUOTED=\"a \\\"b\\\" $c\"\r\n; the end\n"

// TestProcessOptionsReachDaemon: a daemon gets its env files, limits,
// umask and nice value from its first instruction, and a missing env
// file fails a start with the file's name.
func TestProcessOptionsReachDaemon(t *testing.T) {
	envFile := writeEnvFile(t, envFileText)
	dir := t.TempDir()
	out := filepath.Join(dir, "report")
	script := "(" + reportScript + ") > " + out + ".tmp && mv " + out + ".tmp " + out + "; exit 3"
	conf := "d daemon env=BOTH=from-env env=ONLY_ENV=1 env_file=" + envFile + " env_file=-" + dir + "/missing.env" +
		" limit=nofile=123:456 limit=core=0 limit=fsize=1M:infinity umask=0027 nice=5 /bin/sh -c " + shq(script) + "\n" +
		"m daemon env_file=" + dir + "/missing.env /bin/true\n"
	m := startMetad(t, runOpts{conf: conf})
	m.waitEvent(1, "the daemon to exit", msg("exited", "d"))
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	report := string(b)
	for key, want := range map[string]string{
		"Max open files":     "123 456 files",
		"Max core file size": "0 0 bytes",
		"Max file size":      "1048576 unlimited bytes",
		"Umask":              "0027",
		"Nice":               "5",
		"FROM_FILE=":         "yes",
		"BOTH=":              "from the file", // the file overrides env=, as with systemd
		"ONLY_ENV=":          "1",
		"QUOTED=":            `a "b" $c`,
	} {
		if got := envOrField(t, report, key); got != want {
			t.Errorf("%s: got %q, want %q", key, got, want)
		}
	}

	ev := m.waitEvent(1, "the start of m to fail", msg("cannot start", "m"))
	if want := `cannot read env file "` + dir + `/missing.env": no such file or directory`; !strings.Contains(ev.str("error"), want) {
		t.Errorf("got error %q, want it to say %q", ev.str("error"), want)
	}
}

// envOrField returns the value of NAME= in an env listing, or of a
// "Key: value" line.
func envOrField(t *testing.T, report, key string) string {
	t.Helper()
	if strings.HasSuffix(key, "=") {
		for _, line := range strings.Split(report, "\n") {
			if v, ok := strings.CutPrefix(line, key); ok {
				return v
			}
		}
		t.Fatalf("no %s in the environment:\n%s", key, report)
	}
	return reportField(t, report, key)
}

// TestProcessOptionsReachStream: each connection's process gets them
// too, set before it takes its user: root lowers the nice value of a
// process that runs as nobody, who could not.
func TestProcessOptionsReachStream(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a service as another user")
	}
	envFile := writeEnvFile(t, envFileText)
	port := freePort(t)
	conf := fmt.Sprintf("s stream port=%d addr=127.0.0.1 user=65534 env_file=%s nice=-2 umask=077 limit=nofile=64 /bin/sh -c %s\n",
		port, envFile, shq(reportScript))
	m := startMetad(t, runOpts{conf: conf})
	m.waitListening("s")
	c := dial(t, fmt.Sprintf("127.0.0.1:%d", port))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	report := string(b)
	for key, want := range map[string]string{
		"Max open files": "64 64 files",
		"Umask":          "0077",
		"Nice":           "-2",
		"Uid":            "65534 65534 65534 65534",
		"FROM_FILE=":     "yes",
		"PROTO=":         "TCP",
	} {
		if got := envOrField(t, report, key); got != want {
			t.Errorf("%s: got %q, want %q", key, got, want)
		}
	}
}

// TestCheckProcessOptions: metad -n reports bad values of the options,
// and reads every env file as a start would.
func TestCheckProcessOptions(t *testing.T) {
	bad := writeEnvFile(t, "OK=1\nexport X=1\n")
	conf := "a daemon limit=nofiles=10 /bin/true\n" +
		"b daemon limit=nofile=10:5 /bin/true\n" +
		"c daemon umask=0800 nice=-21 /bin/true\n" +
		"d daemon env_file=/nonexistent/d.env env_file=-/nonexistent/e.env /bin/true\n" +
		"e daemon env_file=" + bad + " /bin/true\n"
	path := writeConf(t, conf)
	out, errOut, status := runBin(t, metadBin, "-n", "-f", path)
	want := path + `:1:10: unknown limit "nofiles" (did you mean "nofile"?)` + "\n" +
		path + `:2:10: invalid limit "nofile=10:5": the soft limit is above the hard limit` + "\n" +
		path + `:3:10: invalid umask "0800": want an octal mask from 0000 to 0777` + "\n" +
		path + `:3:21: invalid nice "-21": want a whole number from -20 to 19` + "\n" +
		path + `:4:10: cannot read env file "/nonexistent/d.env": no such file or directory` + "\n" +
		path + `:5:10: env_file ` + bad + `:2:1: invalid name "export X": write NAME=VALUE without export` + "\n"
	if status != 1 || out != "" || errOut != want {
		t.Errorf("got status %d, stdout %q, stderr\n%s\nwant 1, no stdout, stderr\n%s", status, out, errOut, want)
	}
}

// TestProcessOptionsReachListener: a listener's program, which metad
// starts through a step of its own binary that sets LISTEN_PID, gets them
// too, and its LISTEN_ variables win over its env files'.
func TestProcessOptionsReachListener(t *testing.T) {
	envFile := writeEnvFile(t, envFileText+"LISTEN_FDS=7\n")
	out := filepath.Join(t.TempDir(), "report")
	script := "(" + reportScript + ") > " + out + ".tmp && mv " + out + ".tmp " + out
	port := freePort(t)
	conf := fmt.Sprintf("l listener port=%d addr=127.0.0.1 env_file=%s umask=0007 nice=4 limit=nofile=99:999 limit=stack=4M /bin/sh -c %s\n",
		port, envFile, shq(script))
	m := startMetad(t, runOpts{conf: conf})
	m.waitListening("l")
	dial(t, fmt.Sprintf("127.0.0.1:%d", port))
	m.waitEvent(1, "the listener to exit", msg("exited", "l"))
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"Max open files":  "99 999 files",
		"Max stack size":  "4194304 4194304 bytes",
		"Umask":           "0007",
		"Nice":            "4",
		"FROM_FILE=":      "yes",
		"LISTEN_FDS=":     "1",
		"LISTEN_FDNAMES=": "l",
	} {
		if got := envOrField(t, string(b), key); got != want {
			t.Errorf("%s: got %q, want %q", key, got, want)
		}
	}
}
