package tests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// podmanLimit bounds one podman command; a build or a first run may take
// a while on a loaded machine. A deadline, not a delay.
const podmanLimit = 3 * time.Minute

// podmanUlimits are the resource limits podman gives containers here. As
// root, podman raises RLIMIT_NOFILE and RLIMIT_NPROC to its own defaults
// (about a million), which fails ("setrlimit: Operation not permitted")
// where podman runs without CAP_SYS_RESOURCE, as in a container or a VM
// sandbox; these values are below any host's limits.
const podmanUlimits = `[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
`

// podman runs Debian's podman, as root, for the tests of the example
// image. See docs/deploy.md for what it adapts to on this machine.
type podman struct {
	t      *testing.T
	prefix []string // nsenter into the mount namespace podman runs in, or nothing
}

// newPodman returns a podman to run, or skips the test when podman is not
// installed.
func newPodman(t *testing.T) *podman {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (apt-get install podman; CI installs it)")
	}
	requireRoot(t)
	conf := filepath.Join(t.TempDir(), "containers.conf")
	if err := os.WriteFile(conf, []byte(podmanUlimits), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CONTAINERS_CONF", conf)
	p := &podman{t: t}
	if hybridCgroups() {
		p.prefix = privateCgroupView(t)
	}
	return p
}

// hybridCgroups says whether cgroup v2 is mounted beside v1 with
// controllers in it (/sys/fs/cgroup/unified), which crun refuses: "cgroups
// in hybrid mode not supported, drop all controllers from cgroupv2".
func hybridCgroups() bool {
	b, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
	return err == nil && len(bytes.TrimSpace(b)) > 0
}

// privateCgroupView starts a process in a mount namespace of its own
// without /sys/fs/cgroup/unified, where crun sees cgroups v1 alone, and
// returns the nsenter command that runs podman there. Every podman call of
// the test goes through it, so that they all see the same mounts (the
// container's conmon stays in it too). The namespace's mounts are private:
// nothing changes for the rest of the machine. The process ends with the
// test.
func privateCgroupView(t *testing.T) []string {
	t.Helper()
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
		"umount /sys/fs/cgroup/unified && echo ready && exec cat")
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	holder.Stderr = os.Stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // cat ends
		holder.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("cannot make a mount namespace without /sys/fs/cgroup/unified: got %q, %v", line, err)
	}
	return []string{"nsenter", "--target", strconv.Itoa(holder.Process.Pid), "--mount", "--"}
}

// command returns the command that runs podman with args.
func (p *podman) command(ctx context.Context, args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, p.prefix...), "podman"), args...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// run runs podman with args to completion, killed after podmanLimit
// (exit status 124 then), and returns its stdout, stderr and exit status.
func (p *podman) run(args ...string) (string, string, int) {
	p.t.Helper()
	argv := append(append([]string{"timeout", "--kill-after=10s", strconv.Itoa(int(podmanLimit.Seconds()))}, p.prefix...), "podman")
	return runBin(p.t, argv[0], append(argv[1:], args...)...)
}

// must runs podman with args and fails the test unless it exits 0.
func (p *podman) must(args ...string) string {
	p.t.Helper()
	out, errs, status := p.run(args...)
	if status != 0 {
		p.t.Fatalf("podman %s: got exit status %d, want 0\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), status, out, errs)
	}
	return out
}

// buildExample builds examples/Dockerfile as its comment says.
func (p *podman) buildExample() string {
	p.t.Helper()
	return p.build("examples/Dockerfile", "")
}

// build builds the image of dockerfile, a path in a build context made like
// the source tree after "make build" and "cp /bin/busybox bin/busybox",
// with the metad under test; text, if not "", is written there first. It
// returns the image's name; the image is removed at the end of the test.
func (p *podman) build(dockerfile, text string) string {
	p.t.Helper()
	ctx := p.t.TempDir()
	for _, d := range []string{"bin", "examples"} {
		if err := os.Mkdir(filepath.Join(ctx, d), 0o755); err != nil {
			p.t.Fatal(err)
		}
	}
	copyFile(p.t, metadBin, filepath.Join(ctx, "bin", "metad"))
	if static, err := isStatic("/bin/busybox"); err != nil || !static {
		p.t.Fatalf("/bin/busybox is not a static busybox (%v): apt-get install busybox-static", err)
	}
	copyFile(p.t, "/bin/busybox", filepath.Join(ctx, "bin", "busybox"))
	examples, err := os.ReadDir("../examples")
	if err != nil {
		p.t.Fatal(err)
	}
	for _, e := range examples {
		copyFile(p.t, filepath.Join("..", "examples", e.Name()), filepath.Join(ctx, "examples", e.Name()))
	}
	if text != "" {
		if err := os.WriteFile(filepath.Join(ctx, dockerfile), []byte(text), 0o644); err != nil {
			p.t.Fatal(err)
		}
	}
	image := fmt.Sprintf("localhost/metad-test-%d-%s", os.Getpid(), strings.ToLower(strings.ReplaceAll(p.t.Name(), "/", "-")))
	p.must("build", "-f", dockerfile, "-t", image, ctx)
	p.t.Cleanup(func() { p.run("rmi", "-f", image) })
	return image
}

// TestPodmanExampleImage builds examples/Dockerfile offline with podman and
// runs it as its comment says: config mode, metac in the container, podman
// stop with exit status 0, and an interactive shell in command mode whose
// exit status is the container's. The container has no network but
// loopback (--network none): nothing here needs more, and a network
// namespace of podman's own mount namespace would be invisible to podman
// elsewhere on the machine.
func TestPodmanExampleImage(t *testing.T) {
	p := newPodman(t)
	image := p.buildExample()

	t.Run("config mode", func(t *testing.T) {
		pt := *p
		pt.t = t
		name := fmt.Sprintf("metad-test-%d", os.Getpid())
		t.Cleanup(func() { pt.run("rm", "-f", "-t", "0", name) })
		// Attached, as "docker run" without -d: metad's JSON log comes on
		// podman's stderr.
		m := launch(t, pt.command(context.Background(), "run", "--name", name, "--network", "none", image), t.TempDir())
		m.waitEvent(1, "metad started", msg("metad started"))
		if ev := m.waitEvent(1, "control socket", msg("control socket listening")); ev.str("socket") != "/run/metad.sock" {
			t.Errorf("got control socket %q, want /run/metad.sock", ev.str("socket"))
		}
		m.waitEvent(1, "web started", msg("started", "web"))
		out := pt.must("exec", name, "/metac", "list")
		for _, svc := range []string{"web", "echo"} {
			if !regexp.MustCompile(`(?m)^` + svc + ` `).MatchString(out) {
				t.Errorf("metac list: got\n%s\nwant service %s", out, svc)
			}
		}
		pt.must("exec", name, "/metad", "ctl", "list")
		pt.must("stop", "-t", "15", name)
		if status := m.wait(waitLimit); status != 0 {
			t.Errorf("podman run after podman stop: got exit status %d, want 0", status)
		}
		if ev := m.waitEvent(1, "metad stopped", msg("metad stopped")); ev.int("status") != 0 {
			t.Errorf("got metad stopped with status %d, want 0", ev.int("status"))
		}
	})

	t.Run("interactive shell", func(t *testing.T) {
		term, slavePath := openPty(t)
		slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), podmanLimit)
		defer cancel()
		cmd := p.command(ctx, "run", "--rm", "-it", "--network", "none", "-e", "PS1=ready> ", image, "--", "/busybox", "sh")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		err = cmd.Start()
		slave.Close()
		if err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("terminal:\n%s", term.out)
			}
		})
		// metad's log shares the terminal: no $ after the prompt.
		prompt := regexp.MustCompile(`ready> `)
		term.expect(prompt)
		term.send("echo sum-$((40+2))\n")
		term.expect(regexp.MustCompile(`sum-42`))
		term.expect(prompt)
		term.send("exit 7\n")
		err = <-exited
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Errorf("podman run -it IMAGE -- /busybox sh, then exit 7: got %v, want exit status 7", err)
		}
	})
}

// TestPodmanExamplePod runs examples/pod.yaml with podman kube play, which
// makes the pod's emptyDir volumes owned by root and mode 0755: the
// unprivileged container user must find a control socket it can make, so
// that the liveness probe, "metad ctl list", answers. The copy played here
// names the image under test, and leaves out the ports, which --network
// none cannot publish.
func TestPodmanExamplePod(t *testing.T) {
	p := newPodman(t)
	image := p.buildExample()
	src, err := os.ReadFile("../examples/pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pod := fmt.Sprintf("metad-test-pod-%d", os.Getpid())
	yaml := string(src)
	for _, r := range []struct{ re, with string }{
		{`(?m)^  name: metad-example$`, "  name: " + pod},
		{`(?m)^      image: metad-example:latest$`, "      image: " + image + ":latest"},
		{`(?m)^      ports:\n(        .*\n)+`, ""},
		{`(?m)^          port: http$`, "          port: 8080"},
	} {
		re := regexp.MustCompile(r.re)
		if !re.MatchString(yaml) {
			t.Fatalf("examples/pod.yaml has no %q any more: update this test", r.re)
		}
		yaml = re.ReplaceAllString(yaml, r.with)
	}
	file := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	p.must("kube", "play", "--network", "none", file)
	t.Cleanup(func() { p.run("kube", "down", file) })
	container := pod + "-metad"
	m := launch(t, p.command(context.Background(), "logs", "-f", container), t.TempDir())
	ev := m.waitEvent(1, "control socket or an error", func(ev event) bool {
		return ev.str("message") == "control socket listening" || ev.str("level") == "error"
	})
	if ev.str("message") != "control socket listening" {
		t.Fatalf("got %v, want the control socket to listen", ev)
	}
	m.waitEvent(1, "metad started", msg("metad started"))
	probe := regexp.MustCompile(`command: \[([^]]*)\]`).FindStringSubmatch(string(src))
	if probe == nil {
		t.Fatal("examples/pod.yaml has no exec probe any more: update this test")
	}
	var argv []string
	for _, w := range strings.Split(probe[1], ",") {
		argv = append(argv, strings.Trim(strings.TrimSpace(w), `"`))
	}
	p.must(append([]string{"exec", container}, argv...)...)
	// What the kubelet does when the pod is deleted: SIGTERM, and SIGKILL
	// after the grace period.
	p.must("pod", "stop", "-t", "30", pod)
	if ev := m.waitEvent(1, "metad stopped", msg("metad stopped")); ev.int("status") != 0 {
		t.Errorf("got metad stopped with status %d, want 0", ev.int("status"))
	}
}

// TestPodmanReadmeImage builds the minimal Dockerfile of README.md, as
// written there, and runs it in both modes.
func TestPodmanReadmeImage(t *testing.T) {
	p := newPodman(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```dockerfile\n(.*?)```").FindSubmatch(readme)
	if block == nil {
		t.Fatal("README.md has no dockerfile block any more: update this test")
	}
	image := p.build("README.Dockerfile", string(block[1]))

	out, errs, status := p.run("run", "--rm", "--network", "none", image, "--", "/busybox", "sh", "-c", "/metad ctl list && exit 3")
	if status != 3 {
		t.Errorf("run IMAGE -- /busybox sh -c '/metad ctl list && exit 3': got exit status %d, want 3\nstdout:\n%s\nstderr:\n%s", status, out, errs)
	}
	if !regexp.MustCompile(`(?m)^web `).MatchString(out) {
		t.Errorf("metad ctl list: got\n%s\nwant service web", out)
	}
}
