package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kballard/go-shellquote"
	"golang.org/x/sys/unix"

	"metad/conffmt"
	"metad/init"
)

// tailSize is how much of the end of a command's output is kept for its
// error, where the reason for a failure usually is.
const tailSize = 512

// killPatience bounds what Run waits for once an exec: probe's time is
// up, or its command has ended: the command's end after SIGKILL (a
// process stuck in the kernel may take longer), and then the end of its
// output (which a process outside its process group may hold open).
const killPatience = 2 * time.Second

// defaultPath is searched for a command when its environment has no
// PATH: systemd's default.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// run runs an exec: probe's command.
func run(ctx context.Context, p conffmt.Probe, x Exec, timeout time.Duration) error {
	what := p.Text
	if what == "" {
		what = "exec:" + shellquote.Join(p.Argv...)
	}
	if err := command(ctx, p.Argv, x, timeout); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// command runs argv to its end, or until ctx is done, and returns nil
// for an exit status 0, or an error with the status and the last line
// of its output.
func command(ctx context.Context, argv []string, x Exec, timeout time.Duration) error {
	if len(argv) == 0 {
		return errors.New("no command")
	}
	if x.Spawner == nil {
		return errors.New("no way to start a command")
	}
	path, err := lookPath(argv[0], x.Proc.Env, x.Proc.Dir)
	if err != nil {
		return startError(err)
	}
	stdin, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer stdin.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("cannot make a pipe for the output: %w", err)
	}
	proc := x.Proc
	proc.Path, proc.Argv = path, argv
	proc.Files = []int{int(stdin.Fd()), int(w.Fd()), int(w.Fd())}
	proc.Setsid, proc.Foreground, proc.Signals, proc.Pdeathsig = true, false, nil, 0
	ended := make(chan initsys.Exit, 1)
	pid, err := x.Spawner.Spawn(&proc, func(e initsys.Exit) { ended <- e })
	w.Close()
	if err != nil {
		r.Close()
		return startError(err)
	}

	var out tail
	read := make(chan struct{}) // closed when the output has ended or r is closed
	go func() {
		io.Copy(&out, r)
		close(read)
	}()

	var e initsys.Exit
	exited, killed := false, false
	select {
	case e = <-ended:
		exited = true
	case <-ctx.Done():
	}
	patience := time.NewTimer(killPatience)
	defer patience.Stop()
	if !exited {
		killed = true
		unix.Kill(-pid, unix.SIGKILL) // its session's process group
		select {
		case e = <-ended:
			exited = true
		case <-patience.C:
		}
	}
	if exited {
		unix.Kill(-pid, unix.SIGKILL) // whatever it left in its group
		select {
		case <-read:
		case <-patience.C:
		}
	}
	r.Close()
	<-read

	switch {
	case !exited:
		err = fmt.Errorf("%w; process %d has not ended %v after SIGKILL", cause(ctx, nil, timeout), pid, killPatience)
	case killed && e.Code() != 0:
		err = cause(ctx, nil, timeout)
	case e.Code() == 0:
		return nil
	default:
		err = errors.New(e.String())
	}
	if line := out.lastLine(); line != "" {
		return fmt.Errorf("%w: %s", err, line)
	}
	return err
}

// startError is the error of a command that could not be started, with
// the status a shell gives it: 127 not found, 126 not executable.
func startError(err error) error {
	return fmt.Errorf("exit status %d: %w", initsys.StartCode(err), err)
}

// lookPath returns the program to execute for name, the first word of a
// command: name itself if it has a slash (relative to dir, the command's
// working directory, or metad's if ""), else the first executable file
// called name in the directories of PATH in env (nil: metad's
// environment; with none, defaultPath). Relative directories in PATH are
// skipped.
func lookPath(name string, env []string, dir string) (string, error) {
	switch {
	case filepath.IsAbs(name):
		return name, nil
	case strings.Contains(name, "/"):
		return filepath.Abs(filepath.Join(dir, name))
	}
	path, ok := getenv(env, "PATH")
	if !ok {
		path = defaultPath
	}
	var err error = syscall.ENOENT
	for _, d := range filepath.SplitList(path) {
		if !filepath.IsAbs(d) {
			continue
		}
		p := filepath.Join(d, name)
		fi, serr := os.Stat(p)
		switch {
		case serr != nil || !fi.Mode().IsRegular():
		case fi.Mode()&0o111 != 0:
			return p, nil
		default:
			err = syscall.EACCES // unless an executable one comes later
		}
	}
	return "", &notFound{name, err}
}

// notFound is lookPath's error.
type notFound struct {
	name  string
	errno error // ENOENT, or EACCES when only files that are not executable were found
}

func (e *notFound) Error() string {
	if errors.Is(e.errno, syscall.EACCES) {
		return fmt.Sprintf("%q in PATH is not executable", e.name)
	}
	return fmt.Sprintf("%q not found in PATH", e.name)
}

func (e *notFound) Unwrap() error { return e.errno }

// getenv returns the value of key in env, the last one given (a later
// NAME wins, as for env=). A nil env is metad's environment.
func getenv(env []string, key string) (string, bool) {
	if env == nil {
		return os.LookupEnv(key)
	}
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// tail keeps the last tailSize bytes written to it.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > tailSize {
		p = p[len(p)-tailSize:]
	}
	t.b = append(t.b, p...)
	if over := len(t.b) - tailSize; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return n, nil
}

// lastLine returns the last line of text kept that is not blank,
// trimmed, with any broken UTF-8 replaced.
func (t *tail) lastLine() string {
	s := strings.TrimRight(string(t.b), " \t\r\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.ToValidUTF8(strings.TrimSpace(s), "\uFFFD")
}
