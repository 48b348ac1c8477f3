package tests

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// helperDeadline bounds every wait inside a helper program.
const helperDeadline = 20 * time.Second

// runHelper is the test binary acting as a helper program.
func runHelper(name string, args []string) int {
	switch name {
	case "list-fds":
		return listFDs(args)
	case "signals":
		return recordSignals(args)
	case "no-zombies":
		return noZombies()
	case "lazy-init":
		return lazyInit(args)
	case "listen-check":
		return listenCheck(args)
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
		return 2
	}
}

// helper returns the command line that runs helper name with args. The
// Go runtime of the helper is told not to keep cgroup files open (it does
// by default, to follow CPU limits), so that list-fds sees only what the
// helper inherited.
func helper(name string, args ...string) []string {
	return append([]string{"env", "GODEBUG=containermaxprocs=0", "METAD_TEST_HELPER=" + name, selfBin}, args...)
}

// listFDs writes the descriptors open in this process, and its signal
// mask and ignored set, to args[0]: "fds=0,1,2 blocked=0 ignored=0".
// It reads the directory with raw system calls so that the Go runtime
// opens nothing of its own.
func listFDs(args []string) int {
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var fds []int
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getdents(dir, buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if n == 0 {
			break
		}
		_, _, names := unix.ParseDirent(buf[:n], -1, nil)
		for _, name := range names {
			if fd, err := strconv.Atoi(name); err == nil && fd != dir {
				fds = append(fds, fd)
			}
		}
	}
	unix.Close(dir)
	sort.Ints(fds)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var blocked, ignored string
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "SigBlk:"); ok {
			blocked = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			ignored = strings.TrimSpace(v)
		}
	}
	strs := make([]string, len(fds))
	for i, fd := range fds {
		strs[i] = strconv.Itoa(fd)
	}
	out := fmt.Sprintf("fds=%s blocked=%s ignored=%s\n", strings.Join(strs, ","), blocked, ignored)
	if err := os.WriteFile(args[0], []byte(out), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// recordSignals catches the signals named by number in args[1:], writes
// "ready" and then each signal it receives to the file args[0], and exits
// 0 once it has received every one of them.
func recordSignals(args []string) int {
	f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 1
	}
	want := make(map[syscall.Signal]bool)
	ch := make(chan os.Signal, 64)
	for _, a := range args[1:] {
		n, _ := strconv.Atoi(a)
		want[syscall.Signal(n)] = true
		signal.Notify(ch, syscall.Signal(n))
	}
	fmt.Fprintln(f, "ready")
	timeout := time.After(helperDeadline)
	for len(want) > 0 {
		select {
		case s := <-ch:
			fmt.Fprintln(f, int(s.(syscall.Signal)))
			delete(want, s.(syscall.Signal))
		case <-timeout:
			return 1
		}
	}
	return 0
}

// zombies lists the processes of this PID namespace in state Z.
func zombies() []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) && s[i+2] == 'Z' {
			out = append(out, e.Name())
		}
	}
	return out
}

// noZombies exits 0 as soon as no zombie is left in the PID namespace,
// and 1 when some are still there at the deadline.
func noZombies() int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		z := zombies()
		if len(z) == 0 {
			return 0
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "%d zombies left: %v\n", len(z), z[:min(len(z), 10)])
			return 1
		}
		time.Sleep(20 * time.Millisecond) // helper-side poll of /proc, bounded by the deadline
	}
}

// lazyInit is a PID 1 that does not reap: it runs args and waits for that
// one process only, so that the zombie test can be shown to fail.
func lazyInit(args []string) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 1
	}
	return 0
}

// listenCheck is a socket-activated program: it checks the contract of a
// listener service (args: port, name), accepts one connection on fd 3,
// writes "ok" or what is wrong to it, and exits.
func listenCheck(args []string) int {
	var problems []string
	if got, want := os.Getenv("LISTEN_PID"), strconv.Itoa(os.Getpid()); got != want {
		problems = append(problems, fmt.Sprintf("LISTEN_PID=%s, want %s", got, want))
	}
	if got := os.Getenv("LISTEN_FDS"); got != "1" {
		problems = append(problems, fmt.Sprintf("LISTEN_FDS=%s, want 1", got))
	}
	if got := os.Getenv("LISTEN_FDNAMES"); got != args[1] {
		problems = append(problems, fmt.Sprintf("LISTEN_FDNAMES=%s, want %s", got, args[1]))
	}
	if on, err := unix.GetsockoptInt(3, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on != 1 {
		problems = append(problems, fmt.Sprintf("fd 3 is not listening: %v", err))
	}
	if sa, err := unix.Getsockname(3); err != nil {
		problems = append(problems, fmt.Sprintf("fd 3: %v", err))
	} else if in4, ok := sa.(*unix.SockaddrInet4); !ok || strconv.Itoa(in4.Port) != args[0] {
		problems = append(problems, fmt.Sprintf("fd 3 is bound to %v, want port %s", sa, args[0]))
	}
	nfd, _, err := unix.Accept4(3, unix.SOCK_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot accept on fd 3:", err)
		return 1
	}
	reply := "ok\n"
	if len(problems) > 0 {
		reply = strings.Join(problems, "; ") + "\n"
	}
	unix.Write(nfd, []byte(reply))
	unix.Close(nfd)
	return 0
}
