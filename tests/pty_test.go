package tests

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pty is the master side of a pseudo-terminal, and what was read from it.
type pty struct {
	t      *testing.T
	master *os.File
	out    []byte // everything read so far
	seen   int    // how much of out expect has consumed
}

// openPty opens a new pseudo-terminal and returns its master and the
// path of its slave. The master is non-blocking, so reads take deadlines.
func openPty(t *testing.T) (*pty, string) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("cannot open a pseudo-terminal: %v", err)
	}
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("cannot unlock the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("cannot find the pseudo-terminal's number: %v", err)
	}
	return &pty{t: t, master: master}, "/dev/pts/" + strconv.Itoa(n)
}

// send types s on the terminal.
func (p *pty) send(s string) {
	p.t.Helper()
	if _, err := p.master.WriteString(s); err != nil {
		p.t.Fatalf("cannot write %q to the terminal: %v", s, err)
	}
}

// expect reads the terminal until re matches what came after the last
// match, and returns the submatches. It fails the test after waitLimit.
func (p *pty) expect(re *regexp.Regexp) []string {
	p.t.Helper()
	deadline := time.Now().Add(waitLimit)
	buf := make([]byte, 4096)
	for {
		if loc := re.FindSubmatchIndex(p.out[p.seen:]); loc != nil {
			var subs []string
			for i := 0; i < len(loc); i += 2 {
				if loc[i] >= 0 {
					subs = append(subs, string(p.out[p.seen+loc[i]:p.seen+loc[i+1]]))
				}
			}
			p.seen += loc[1]
			return subs
		}
		p.master.SetReadDeadline(deadline)
		n, err := p.master.Read(buf)
		p.out = append(p.out, buf[:n]...)
		if err != nil {
			p.t.Fatalf("got %v with terminal output %q, want %q", err, p.out[p.seen:], re)
		}
	}
}

// foreground returns the foreground process group of the terminal.
func (p *pty) foreground() int {
	p.t.Helper()
	pgrp, err := unix.IoctlGetInt(int(p.master.Fd()), unix.TIOCGPGRP)
	if err != nil {
		p.t.Fatalf("cannot get the terminal's foreground process group: %v", err)
	}
	return pgrp
}

// TestPtyInteractiveShell runs "metad -- sh" on a terminal, as a user does
// in "docker run -it": the shell gets the foreground process group, so job
// control works and Ctrl-C interrupts the shell's foreground job, not
// metad; the shell's exit status is metad's.
func TestPtyInteractiveShell(t *testing.T) {
	p, slavePath := openPty(t)
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	conf := writeConf(t, "") // not the machine's /etc/metad.conf
	dir := filepath.Dir(conf)
	cmd := exec.Command(metadBin, "--log-format", "json", "-f", conf, "-s", filepath.Join(dir, "metad.sock"), "--", "sh")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PS1=ready> ", "ENV=")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// A session of its own with the terminal as controlling terminal, as
	// a terminal emulator or sshd starts a login shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	slave.Close()
	if err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // nothing if it has exited
		<-exited
		if t.Failed() {
			t.Logf("terminal:\n%s", p.out)
		}
	})
	prompt := regexp.MustCompile(`ready> $`)
	p.expect(prompt)

	// The shell leads the foreground group; metad is in the background.
	p.send("echo pid-$$\n")
	shell, _ := strconv.Atoi(p.expect(regexp.MustCompile(`pid-(\d+)`))[1])
	p.expect(prompt)
	if got := p.foreground(); got != shell {
		t.Errorf("got foreground process group %d, want the shell's, %d (metad is %d)", got, shell, cmd.Process.Pid)
	}

	// Job control: a background job, listed by jobs.
	p.send("sleep 100 &\n")
	p.expect(prompt)
	p.send("jobs\n")
	p.expect(regexp.MustCompile(`\[1\][ +]*Running +sleep 100`))
	p.expect(prompt)

	// Ctrl-C interrupts the foreground job; the shell and metad go on.
	p.send("sleep 100\n")
	deadline := time.Now().Add(waitLimit)
	for p.foreground() == shell {
		if time.Now().After(deadline) {
			t.Fatalf("sleep did not get the foreground within %v", waitLimit)
		}
		time.Sleep(5 * time.Millisecond) // the terminal has no event for a change of foreground
	}
	p.send("\x03")
	p.expect(prompt)
	p.send("echo status-$?\n")
	p.expect(regexp.MustCompile(`status-130\b`))
	p.expect(prompt)

	p.send("kill %1; exit 5\n")
	select {
	case <-exited:
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) || ee.ExitCode() != 5 {
			t.Errorf("got %v, want metad to exit 5 like its shell", waitErr)
		}
	case <-time.After(waitLimit):
		t.Fatalf("metad did not exit within %v after the shell's exit 5", waitLimit)
	}
}
