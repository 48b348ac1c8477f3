package tests

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// quickstartMarker is the HTML comment, invisible on the rendered page,
// that names a fenced block of README.md that TestOnboardQuickStart runs.
var quickstartMarker = regexp.MustCompile(`^<!-- quickstart: ([a-z0-9-]+) -->$`)

// readmeBlocks returns the command lines of each marked block of the
// README, by name: comments ("  # ...") and blank lines dropped.
func readmeBlocks(t *testing.T, readme string) map[string][]string {
	t.Helper()
	blocks := make(map[string][]string)
	sc := bufio.NewScanner(strings.NewReader(readme))
	name, inBlock := "", false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case inBlock && strings.HasPrefix(line, "```"):
			inBlock, name = false, ""
		case inBlock:
			cmd, _, _ := strings.Cut(line, " #")
			if cmd = strings.TrimSpace(cmd); cmd != "" && !strings.HasPrefix(cmd, "#") {
				blocks[name] = append(blocks[name], cmd)
			}
		case name != "" && strings.HasPrefix(line, "```"):
			inBlock = true
		case name != "" && strings.TrimSpace(line) != "":
			t.Fatalf("README.md: the block marked %q does not follow its marker", name)
		default:
			if m := quickstartMarker.FindStringSubmatch(line); m != nil {
				name = m[1]
			}
		}
	}
	return blocks
}

// TestOnboardQuickStart does what README.md's quick start says, as it
// says it: "make run" in one terminal, then the commands of the second
// terminal, then the commands of the metac section, each of which must
// succeed on the services of examples/metad.conf; the metac section's
// "shutdown" ends the make run of the first terminal, with status 0. The
// commands are read from the README, so a README that drifts from the
// Makefile or the binary fails here.
//
// metad and metac find their control socket the same way, which is what
// the quick start relies on; METAD_SOCKET, which both honour, keeps this
// test off the machine's own /run/metad.sock. The test runs make in the
// source tree, which builds bin/metad there, as a user's make run does.
func TestOnboardQuickStart(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make not found: %v (CI installs it)", err)
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, string(readme))
	for _, name := range []string{"terminal-1", "terminal-2", "metac"} {
		if len(blocks[name]) == 0 {
			t.Fatalf("README.md has no block marked <!-- quickstart: %s --> with commands in it", name)
		}
	}
	if len(blocks["terminal-1"]) != 1 {
		t.Fatalf("got %q in the first terminal of the quick start, want one command that runs metad", blocks["terminal-1"])
	}

	dir := t.TempDir()
	env := append(os.Environ(), "METAD_SOCKET="+filepath.Join(dir, "metad.sock"))
	// examples/metad.conf's sleeper leaves its pid file in the directory
	// metad runs in.
	pidfile := filepath.Join(repo, "metad-sleeper.pid")
	if _, err := os.Lstat(pidfile); os.IsNotExist(err) {
		t.Cleanup(func() { os.Remove(pidfile) })
	}

	// Terminal 1: metad's log (JSON, on a pipe) comes out of make.
	run := exec.Command("/bin/sh", "-c", blocks["terminal-1"][0])
	run.Dir, run.Env = repo, env
	// A process group, as a terminal's foreground job: Ctrl-C reaches
	// make and metad both.
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	m := launch(t, run, dir)
	t.Cleanup(func() {
		if !m.exited() {
			syscall.Kill(-run.Process.Pid, syscall.SIGINT)
		}
	})
	m.until(waitLimit*6, "metad started (make run builds it first)", func() bool {
		for _, ev := range m.events {
			if ev.str("message") == "metad started" {
				return true
			}
		}
		return m.done
	})
	if m.exited() {
		t.Fatalf("%q ended with status %d before metad started", blocks["terminal-1"][0], m.status)
	}

	names := exampleServices(t, repo)
	sh := func(line string) string {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", line)
		cmd.Dir, cmd.Env = repo, env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: got %v, want exit status 0\nstdout:\n%s\nstderr:\n%s", line, err, out.String(), errb.String())
		}
		return out.String()
	}

	// Terminal 2, as written.
	for _, line := range blocks["terminal-2"] {
		out := sh(line)
		if strings.HasSuffix(line, "metac list") {
			for _, name := range names {
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` `).MatchString(out) {
					t.Errorf("%s: got\n%s\nwant a row for service %q of examples/metad.conf", line, out, name)
				}
			}
		}
	}

	// The metac section, with bin/metac for the metac that make install
	// would put on PATH. poweroff, reboot and halt are for PID 1 of a
	// machine; shutdown is run last and ends make run.
	shutdown := ""
	for _, line := range blocks["metac"] {
		words := strings.Fields(line)
		if words[0] != "metac" {
			t.Fatalf("README.md: got %q in the metac section, want a metac command", line)
		}
		line = "bin/" + line
		switch words[len(words)-1] {
		case "poweroff", "reboot", "halt":
			continue
		case "shutdown":
			shutdown = line
			continue
		}
		sh(line)
		if words[len(words)-1] == "reexec" {
			m.waitEvent(1, "the new image to take over", msg("took over from the previous metad"))
		}
	}
	if shutdown == "" {
		t.Fatal("README.md: the metac section has no shutdown command")
	}
	sh(shutdown)
	if status := m.wait(waitLimit); status != 0 {
		t.Errorf("%q after %q: got exit status %d, want 0", blocks["terminal-1"][0], shutdown, status)
	}
}

// exampleServices returns the names of the services of
// examples/metad.conf, as metad reads them.
func exampleServices(t *testing.T, repo string) []string {
	t.Helper()
	out, errs, status := runBin(t, metadBin, "-n", "-v", "-f", filepath.Join(repo, "examples", "metad.conf"))
	if status != 0 {
		t.Fatalf("metad -n -v -f examples/metad.conf: exit status %d: %s", status, errs)
	}
	var names []string
	for line := range strings.Lines(out) {
		if name, _, ok := strings.Cut(line, " "); ok {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		t.Fatalf("got no services from examples/metad.conf:\n%s", out)
	}
	return names
}

// TestOnboardBashCompletion completes metac and metad command lines with
// completion/metad.bash, as bash does on Tab: commands and options from
// the binary's help, and service names from the running metad, through the
// socket typed on the line.
func TestOnboardBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	m := startMetad(t, runOpts{conf: "clock daemon sleep 600\nflaky daemon disabled false\n"})
	m.waitEvent(1, "metad started", msg("metad started"))
	sock := filepath.Join(m.dir, "metad.sock")
	src, err := filepath.Abs("../completion/metad.bash")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line string // the words typed, the last one being completed
		want string // COMPREPLY, space-separated
	}{
		{metacBin + " re", "reboot reexec reload restart"},
		{metacBin + " --js", "--json"},
		{metacBin + " -s " + sock + " restart ", "clock flaky"},
		{metacBin + " -s " + sock + " enable f", "flaky"},
		{metacBin + " -s " + sock + " kill clock T", "TERM"},
		{metacBin + " -s " + sock + " reload ", ""},
		{metadBin + " --log-level w", "warn"},
		{metadBin + " ctl -s " + sock + " stop c", "clock"},
	}
	for _, tt := range tests {
		words := strings.Split(tt.line, " ")
		// What bash does on Tab: set the words, call the function that
		// the file registered for the program's name.
		script := fmt.Sprintf("source %s\nCOMP_WORDS=(%s); COMP_CWORD=%d\n_%s\necho \"${COMPREPLY[*]}\"\n",
			shq(src), shq(words...), len(words)-1, filepath.Base(words[0]))
		out, errs, status := runBin(t, bash, "--norc", "-c", script)
		if got := strings.TrimSpace(out); status != 0 || got != tt.want {
			t.Errorf("%q: got %q (exit status %d, %s), want %q", tt.line, got, status, errs, tt.want)
		}
	}
}
