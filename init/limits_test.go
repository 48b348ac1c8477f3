package initsys

import (
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// sleeper returns a Proc that sleeps until killed: Spawn returns once it
// has been executed, so what /proc shows of it then is what the program
// started with.
func sleeper() *Proc {
	return &Proc{Path: "/bin/sleep", Argv: []string{"sleep", "1000"}, Files: []int{0, 1, 2}, Setsid: true}
}

// procFile returns /proc/PID/name.
func procFile(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// statusField returns the value of a line of /proc/PID/status: "0027"
// for "Umask:\t0027".
func statusField(t *testing.T, pid int, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + key + `:\s*(.*)$`).FindStringSubmatch(procFile(t, pid, "status"))
	if m == nil {
		t.Fatalf("no %s in /proc/%d/status", key, pid)
	}
	return strings.TrimSpace(m[1])
}

// niceOf returns the nice value of pid: field 19 of /proc/PID/stat.
func niceOf(t *testing.T, pid int) int {
	t.Helper()
	stat := procFile(t, pid, "stat")
	f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+2:]) // from field 3
	n, err := strconv.Atoi(f[19-3])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// limitOf returns the soft and hard limit of a line of /proc/PID/limits
// ("Max open files"), as printed there: "1024", "unlimited".
func limitOf(t *testing.T, pid int, name string) (soft, hard string) {
	t.Helper()
	for _, line := range strings.Split(procFile(t, pid, "limits"), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			f := strings.Fields(rest)
			return f[0], f[1]
		}
	}
	t.Fatalf("no %q in /proc/%d/limits", name, pid)
	return "", ""
}

func ptr[T any](v T) *T { return &v }

// canRaiseLimits reports whether this process may raise a hard limit
// (CAP_SYS_RESOURCE): root in a container often may not.
func canRaiseLimits(t *testing.T) bool {
	capEff, err := strconv.ParseUint(statusField(t, os.Getpid(), "CapEff"), 16, 64)
	return err == nil && capEff&(1<<unix.CAP_SYS_RESOURCE) != 0
}

// TestProcSettings: the program starts with the limits, nice value and
// umask of its Proc, and keeps the other limits metad was started with.
func TestProcSettings(t *testing.T) {
	var stack unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &stack); err != nil {
		t.Fatal(err)
	}
	p := sleeper()
	p.Umask = ptr(fs.FileMode(0o027))
	p.Nice = ptr(7)
	p.Rlimits = []Rlimit{
		{unix.RLIMIT_NOFILE, 100, 200},
		{unix.RLIMIT_CORE, 0, unix.RLIM_INFINITY},
		{unix.RLIMIT_FSIZE, 1 << 20, 1 << 30},
		{unix.RLIMIT_CPU, 3600, unix.RLIM_INFINITY},
	}
	c := spawn(t, p)
	if got := statusField(t, c.pid, "Umask"); got != "0027" {
		t.Errorf("umask: got %s, want 0027", got)
	}
	if got := niceOf(t, c.pid); got != 7 {
		t.Errorf("nice: got %d, want 7", got)
	}
	for _, tt := range []struct{ name, soft, hard string }{
		{"Max open files", "100", "200"},
		{"Max core file size", "0", "unlimited"},
		{"Max file size", "1048576", "1073741824"},
		{"Max cpu time", "3600", "unlimited"},
		{"Max stack size", limitText(stack.Cur), limitText(stack.Max)}, // metad's
	} {
		if soft, hard := limitOf(t, c.pid, tt.name); soft != tt.soft || hard != tt.hard {
			t.Errorf("%s: got %s:%s, want %s:%s", tt.name, soft, hard, tt.soft, tt.hard)
		}
	}
}

// limitText writes a limit as /proc/PID/limits does.
func limitText(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

// TestProcSettingsBeforeUser: the limits and the nice value are set
// while the child is still root, then it takes its user, group and
// directory: so a service of another user gets a hard limit above
// metad's and a nice value below it, which that user could not set.
func TestProcSettingsBeforeUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as another user")
	}
	var nofile unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err != nil {
		t.Fatal(err)
	}
	raised := nofile.Max + 1
	if !canRaiseLimits(t) || nofile.Max == unix.RLIM_INFINITY || raised > nrOpen(unix.RLIM_INFINITY) {
		raised = nofile.Max // cannot raise it: the nice value shows the order
	}
	dir, err := os.MkdirTemp("", "proc-settings-") // not t.TempDir: the user must reach it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	os.Chmod(dir, 0o755)
	p := sleeper()
	p.Cred = &syscall.Credential{Uid: 65534, Gid: 65533, Groups: []uint32{65533, 100}}
	p.Dir = dir
	p.Nice = ptr(-3)
	p.Rlimits = []Rlimit{{unix.RLIMIT_NOFILE, 64, raised}}
	c := spawn(t, p)
	if got := niceOf(t, c.pid); got != -3 {
		t.Errorf("nice: got %d, want -3", got)
	}
	if soft, hard := limitOf(t, c.pid, "Max open files"); soft != "64" || hard != strconv.FormatUint(raised, 10) {
		t.Errorf("open files: got %s:%s, want 64:%d", soft, hard, raised)
	}
	for key, want := range map[string]string{"Uid": "65534\t65534\t65534\t65534", "Gid": "65533\t65533\t65533\t65533", "Groups": "100 65533"} {
		if got := statusField(t, c.pid, key); got != want {
			t.Errorf("%s: got %q, want %q", key, got, want)
		}
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", c.pid)); err != nil || cwd != dir {
		t.Errorf("cwd: got %q, %v, want %q", cwd, err, dir)
	}
}

// TestProcSettingsWithSignals: the shim gives both the signal state and
// the settings.
func TestProcSettingsWithSignals(t *testing.T) {
	p := sleeper()
	p.Signals = &SignalState{Ignored: set(syscall.SIGHUP), Blocked: set(syscall.SIGUSR1)}
	p.Umask = ptr(fs.FileMode(0o077))
	c := spawn(t, p)
	want := map[string]string{"Umask": "0077", "SigIgn": fmt.Sprintf("%016x", set(syscall.SIGHUP)), "SigBlk": fmt.Sprintf("%016x", set(syscall.SIGUSR1))}
	for key, v := range want {
		if got := statusField(t, c.pid, key); got != v {
			t.Errorf("%s: got %s, want %s", key, got, v)
		}
	}
}

// TestUnlimitedOpenFiles: an unlimited RLIMIT_NOFILE is the most the
// kernel allows, as with systemd: setrlimit(2) refuses more. The mapping
// is checked everywhere; a child gets it where metad may raise its hard
// limit that far (CAP_SYS_RESOURCE, which some machines withhold from
// root), and elsewhere the start fails with the reason.
func TestUnlimitedOpenFiles(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		t.Fatal(err)
	}
	n := strings.TrimSpace(string(b))
	if got := strconv.FormatUint(nrOpen(unix.RLIM_INFINITY), 10); got != n {
		t.Fatalf("nrOpen(infinity): got %s, want fs.nr_open %s", got, n)
	}
	if got := nrOpen(4096); got != 4096 {
		t.Errorf("nrOpen(4096): got %d, want it unchanged", got)
	}
	p := sleeper()
	p.Rlimits = []Rlimit{{unix.RLIMIT_NOFILE, unix.RLIM_INFINITY, unix.RLIM_INFINITY}}
	if !canRaiseLimits(t) {
		if _, err := reaper.Spawn(p, nil); err == nil || !strings.Contains(err.Error(), "cannot set RLIMIT_NOFILE: operation not permitted") {
			t.Errorf("without CAP_SYS_RESOURCE: got %v, want the limit refused", err)
		}
		return
	}
	c := spawn(t, p)
	if soft, hard := limitOf(t, c.pid, "Max open files"); soft != n || hard != n {
		t.Errorf("got %s:%s, want %s:%s", soft, hard, n, n)
	}
}

// TestProcSettingsErrors: a setting the shim cannot apply fails Spawn
// with the step and the errno, and StartCode's status; bad values fail
// before anything starts.
func TestProcSettingsErrors(t *testing.T) {
	tests := []struct {
		name string
		set  func(p *Proc)
		want string // the error after `cannot start "/bin/sleep": `
		code int
	}{
		{"no directory", func(p *Proc) { p.Dir = "/nonexistent"; p.Umask = ptr(fs.FileMode(0)) },
			"cannot change to the working directory: no such file or directory", 127},
		{"soft above hard", func(p *Proc) { p.Rlimits = []Rlimit{{unix.RLIMIT_CORE, 2, 1}} },
			"invalid RLIMIT_CORE: soft limit 2 above hard limit 1", 126},
		{"umask", func(p *Proc) { p.Umask = ptr(fs.FileMode(0o1000)) }, "invalid umask 01000: want 0 to 0777", 126},
		{"nice", func(p *Proc) { p.Nice = ptr(20) }, "invalid nice value 20: want -20 to 19", 126},
		{"exec", func(p *Proc) { p.Path = "/etc/passwd"; p.Nice = ptr(0) }, "permission denied", 126},
	}
	if os.Geteuid() == 0 {
		// More open files than the kernel allows: refused even to root.
		tests = append(tests, struct {
			name string
			set  func(p *Proc)
			want string
			code int
		}{"too many files", func(p *Proc) {
			n := nrOpen(unix.RLIM_INFINITY) + 1
			p.Rlimits = []Rlimit{{unix.RLIMIT_NOFILE, n, n}}
		}, "cannot set RLIMIT_NOFILE: operation not permitted", 126})
	} else {
		tests = append(tests, struct {
			name string
			set  func(p *Proc)
			want string
			code int
		}{"nice below metad's", func(p *Proc) { p.Nice = ptr(-20) }, "cannot set the nice value: permission denied", 126})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := sleeper()
			tt.set(p)
			called := make(chan Exit, 1)
			_, err := reaper.Spawn(p, func(e Exit) { called <- e })
			want := fmt.Sprintf("cannot start %q: %s", p.Path, tt.want)
			if err == nil || err.Error() != want {
				t.Fatalf("got %v, want %s", err, want)
			}
			if got := StartCode(err); got != tt.code {
				t.Errorf("StartCode: got %d, want %d", got, tt.code)
			}
			select {
			case e := <-called:
				t.Errorf("got an exit %v, want none", e)
			default:
			}
		})
	}
}

// TestNoShimWithoutSettings: a Proc without settings or ignored signals
// is executed directly, with its user and directory set by the fork
// child; one with settings goes through the shim, which gets them.
func TestNoShimWithoutSettings(t *testing.T) {
	p := sleeper()
	p.Dir = "/tmp"
	p.Cred = &syscall.Credential{Uid: 1, Gid: 1}
	p.Signals = &SignalState{Blocked: set(syscall.SIGUSR1)}
	attr, err := p.attr()
	if err != nil {
		t.Fatal(err)
	}
	if viaShim(attr) || attr.Dir != "/tmp" || attr.Sys.Credential != p.Cred {
		t.Errorf("got shim %v, dir %q, credential %v; want no shim, /tmp, the Proc's", viaShim(attr), attr.Dir, attr.Sys.Credential)
	}
	p.Nice = ptr(1)
	if attr, err = p.attr(); err != nil {
		t.Fatal(err)
	}
	if !viaShim(attr) || attr.Dir != "" || attr.Sys.Credential != nil {
		t.Errorf("got shim %v, dir %q, credential %v; want the shim, which changes both", viaShim(attr), attr.Dir, attr.Sys.Credential)
	}
}

// BenchmarkSpawnSettings measures starting /bin/true and reaping it with a
// umask, which takes the shim; BenchmarkSpawn is without.
func BenchmarkSpawnSettings(b *testing.B) {
	benchSpawn(b, &Proc{Path: "/bin/true", Argv: []string{"true"}, Files: []int{0, 1, 2}, Setsid: true, Umask: ptr(fs.FileMode(0o22))})
}
