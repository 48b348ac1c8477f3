package tests

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The boot test runs the machine under software emulation (no KVM): it
// boots in seconds here, but a loaded CI machine can be many times slower.
// These bound the waits; they are deadlines, not delays.
const (
	bootLimit     = 3 * time.Minute // qemu started → the guest's network up
	echoLimit     = time.Minute     // network up → the echo service answers through qemu
	poweroffLimit = time.Minute     // poweroff asked → qemu exited
)

// kernelPackage is Debian's metapackage of the kernel the boot test
// boots: small, with virtio-net as a module.
const kernelPackage = "linux-image-cloud-amd64"

// bootModules are the modules the guest loads for its network card (a
// virtio PCI device), with their dependencies found from the modules.
var bootModules = []string{"virtio_pci", "virtio_net"}

// bootConf is /etc/metad.conf of the guest. "net" runs bootScript and
// stays up (a daemon that exits is started again); "echo" is the stream
// service the host talks to; a connection to "off" powers the machine
// off through metac.
const bootConf = `# /etc/metad.conf of the boot test's initramfs
net daemon watch_output env=PATH=/bin /bin/sh /etc/net.sh
echo stream port=7001 max=4 /bin/cat
off stream port=7002 /bin/metac poweroff
`

// bootScript, /etc/net.sh of the guest, loads the modules listed in
// /etc/modules, configures eth0 for qemu's user-mode network and prints
// the mounts that metad made.
const bootScript = `while read m; do insmod "$m" || exit 1; done < /etc/modules
ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || exit 1
cat /proc/mounts
echo network up
exec sleep 1000000000
`

// bootApplets are the busybox applets the guest's services run.
var bootApplets = []string{"sh", "cat", "insmod", "ip", "sleep"}

// TestBootMachine boots a Linux kernel under qemu with metad as /init of
// the initramfs, twice. Each time metad mounts the essential file
// systems and runs a daemon and a stream service that the host reaches
// through a forwarded port. Then it goes down cleanly: the first time on
// "metac poweroff" from a service, which powers the machine off; the
// second on Ctrl-Alt-Del, which reboots it (qemu -no-reboot exits then).
//
// It needs qemu-system-x86_64, busybox-static and apt-get download (for
// the kernel, cached in the user's cache directory), and runs only with
// METAD_BOOT_TEST=1, as make test-boot sets; then it fails, not skips,
// when any of them is missing. METAD_BOOT_BIN names the binary to boot
// (make test-boot: bin/metad); by default it is the one TestMain built.
func TestBootMachine(t *testing.T) {
	if os.Getenv("METAD_BOOT_TEST") != "1" {
		t.Skip("boots a VM: run with METAD_BOOT_TEST=1 (make test-boot)")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("cannot boot: %v (apt-get install qemu-system-x86)", err)
	}
	busybox := "/bin/busybox"
	if static, err := isStatic(busybox); err != nil || !static {
		t.Fatalf("cannot boot: %s is not a static busybox (%v): apt-get install busybox-static", busybox, err)
	}
	// make test-boot boots the binary of make build; go test, its own.
	initBin := metadBin
	if bin := os.Getenv("METAD_BOOT_BIN"); bin != "" {
		initBin = bin
	}
	if static, err := isStatic(initBin); err != nil || !static {
		t.Fatalf("cannot boot: %s is not a static binary (%v)", initBin, err)
	}
	vmlinuz, modDir := cloudKernel(t)
	mods, err := moduleOrder(modDir, bootModules)
	if err != nil {
		t.Fatalf("cannot find the network modules: %v", err)
	}
	var names []string
	for _, mod := range mods {
		names = append(names, strings.TrimSuffix(filepath.Base(mod), ".ko"))
	}
	t.Logf("kernel %s; modules, in load order: %s", vmlinuz, strings.Join(names, " "))
	initrd := filepath.Join(t.TempDir(), "initrd.cpio")
	if err := writeInitramfs(initrd, bootFiles(t, initBin, busybox, mods)); err != nil {
		t.Fatal(err)
	}
	boot := func(t *testing.T) *vm { return bootVM(t, qemu, vmlinuz, initrd) }

	t.Run("metac poweroff", func(t *testing.T) {
		v := boot(t)
		asked := time.Now()
		off := dial(t, fmt.Sprintf("127.0.0.1:%d", v.offPort))
		io.ReadAll(off) // until metac is done, or the machine gone
		v.down(t, "poweroff", "reboot: Power down")
		t.Logf("powered off in %v", time.Since(asked).Round(time.Millisecond))
	})

	t.Run("ctrl-alt-del", func(t *testing.T) {
		v := boot(t)
		asked := time.Now()
		v.monitor(t, "sendkey ctrl-alt-delete")
		v.down(t, "reboot", "reboot: Restarting system")
		if ev := v.matching(msg("shutting down")); len(ev) != 1 || ev[0].str("signal") != "interrupt" {
			t.Errorf("got %v, want one \"shutting down\" on SIGINT", ev)
		}
		t.Logf("rebooted in %v", time.Since(asked).Round(time.Millisecond))
	})
}

// vm is a guest booted by bootVM; its console is the log of the instance.
type vm struct {
	*instance
	echoPort    int    // forwarded to the guest's echo service
	offPort     int    // forwarded to the guest's off service
	monitorPath string // qemu's monitor socket
}

// bootVM boots the kernel with the initramfs under qemu and waits until
// the guest's network is up and its echo service answers through qemu. It
// checks that metad mounted the essential file systems.
func bootVM(t *testing.T, qemu, vmlinuz, initrd string) *vm {
	t.Helper()
	dir := t.TempDir()
	v := &vm{echoPort: freePort(t), offPort: freePort(t), monitorPath: filepath.Join(dir, "monitor")}
	args := []string{
		"-accel", "tcg", "-m", "256M", "-nographic", "-no-reboot",
		"-monitor", "unix:" + v.monitorPath + ",server=on,wait=off",
		"-kernel", vmlinuz, "-initrd", initrd,
		// The words after "--" are the arguments of /init. JSON logs,
		// because the console is a terminal.
		"-append", "console=ttyS0 quiet panic=-1 -- --log-format=json",
		// restrict=on: the guest reaches nothing but what is forwarded.
		"-netdev", fmt.Sprintf("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:7001,hostfwd=tcp:127.0.0.1:%d-:7002", v.echoPort, v.offPort),
		"-device", "virtio-net-pci,netdev=net0",
	}
	// The serial console is qemu's stdout; launch reads stderr.
	cmd := exec.Command("/bin/sh", append([]string{"-c", `exec "$0" "$@" >&2`, qemu}, args...)...)
	start := time.Now()
	v.instance = launch(t, cmd, dir)
	v.until(bootLimit, "the guest's network to come up", func() bool { return v.seen(msg("network up", "net")) })
	t.Logf("booted and configured the network in %v", time.Since(start).Round(time.Millisecond))

	if errs := v.matching(msg("cannot mount every essential filesystem")); len(errs) > 0 {
		t.Errorf("got %v, want the essential file systems mounted", errs)
	}
	var mounts []string
	for _, ev := range v.matching(func(ev event) bool { return ev.str("svc") == "net" && ev.str("stream") == "stdout" }) {
		if f := strings.Fields(ev.str("message")); len(f) > 2 {
			mounts = append(mounts, f[2]+" on "+f[1])
		}
	}
	for _, want := range []string{"proc on /proc", "sysfs on /sys", "devtmpfs on /dev", "tmpfs on /run"} {
		if !slices.Contains(mounts, want) {
			t.Errorf("got mounts %v, want %s (the initramfs has no such directory: metad made it)", mounts, want)
		}
	}
	got := echoThroughQemu(t, v.echoPort)
	if want := "hello from the host\n"; got != want {
		t.Fatalf("echo service: got %q, want %q", got, want)
	}
	return v
}

// monitor sends a command to qemu's monitor.
func (v *vm) monitor(t *testing.T, command string) {
	t.Helper()
	c, err := net.DialTimeout("unix", v.monitorPath, waitLimit)
	if err != nil {
		t.Fatalf("cannot reach qemu's monitor: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		t.Fatalf("cannot write to qemu's monitor: %v", err)
	}
	// The monitor echoes the command once it has read it.
	var seen []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(seen, []byte(command)) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("qemu's monitor: got %q, %v; want %q echoed", seen, err, command)
		}
		seen = append(seen, buf[:n]...)
	}
}

// down waits for metad to take the machine down with final (poweroff,
// reboot) and for qemu to exit, and checks that it went cleanly and the
// kernel said kernelSays.
func (v *vm) down(t *testing.T, final, kernelSays string) {
	t.Helper()
	v.until(poweroffLimit, "the system to go down", func() bool { return v.seen(msg("system going down")) })
	if got := v.wait(poweroffLimit); got != 0 {
		t.Errorf("got qemu exit status %d, want 0", got)
	}
	if ev := v.matching(msg("system going down")); ev[0].str("action") != final {
		t.Errorf("got action %q, want %s", ev[0].str("action"), final)
	}
	if ev := v.matching(msg("exited", "net")); len(ev) != 1 || ev[0].str("outcome") != "clean" {
		t.Errorf("got %v, want the net daemon stopped cleanly", ev)
	}
	if ev := v.matching(msg("metad stopped")); len(ev) != 1 || ev[0].int("status") != 0 {
		t.Errorf("got %v, want one \"metad stopped\" with status 0", ev)
	}
	if ev := v.matching(msg("cannot finish shutdown; staying up")); len(ev) > 0 {
		t.Errorf("got %v, want reboot(2) to succeed", ev)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	t.Logf("console:\n%s", strings.Join(v.lines, "\n"))
	if !slices.ContainsFunc(v.lines, func(l string) bool { return strings.Contains(l, kernelSays) }) {
		t.Errorf("the console has no %q from the kernel", kernelSays)
	}
}

// seen reports whether a log event so far matches. Call it with m.mu
// held, as until does.
func (m *instance) seen(match func(event) bool) bool {
	return slices.ContainsFunc(m.events, match)
}

// echoThroughQemu sends a line to the guest's echo service and returns
// what came back. qemu accepts connections on the forwarded port before
// the guest can take them, and then closes them: nothing says when the
// guest side is reachable, so this tries again until it answers, bounded
// by echoLimit.
func echoThroughQemu(t *testing.T, port int) string {
	t.Helper()
	deadline := time.Now().Add(echoLimit)
	for {
		got, err := echoOnce(fmt.Sprintf("127.0.0.1:%d", port), "hello from the host\n")
		if err == nil && got != "" {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("echo service: no answer within %v: got %q, %v", echoLimit, got, err)
		}
		time.Sleep(200 * time.Millisecond) // between tries of a port with no readiness event
	}
}

// echoOnce writes line to a new connection to addr and reads the answer.
func echoOnce(addr, line string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line); err != nil {
		return "", err
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	return string(got), err
}

// bootFiles returns the initramfs of the boot test: metad (the file
// initBin) as /init, its config, metac, busybox for the services, and the
// modules in load order.
// No /proc, /sys, /run: metad makes them. /dev/console is there for the
// kernel, which opens it for /init before anything runs.
func bootFiles(t *testing.T, initBin, busybox string, mods []string) []cpioEntry {
	t.Helper()
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	files := []cpioEntry{
		{name: "dev", mode: cpioDir | 0o755},
		{name: "dev/console", mode: cpioChar | 0o600, rdev: [2]uint32{5, 1}},
		{name: "init", mode: cpioFile | 0o755, data: read(initBin)},
		{name: "etc", mode: cpioDir | 0o755},
		{name: "etc/metad.conf", mode: cpioFile | 0o644, data: []byte(bootConf)},
		{name: "etc/net.sh", mode: cpioFile | 0o644, data: []byte(bootScript)},
		{name: "bin", mode: cpioDir | 0o755},
		{name: "bin/metac", mode: cpioLink | 0o777, data: []byte("/init")},
		{name: "bin/busybox", mode: cpioFile | 0o755, data: read(busybox)},
		{name: "lib", mode: cpioDir | 0o755},
		{name: "lib/modules", mode: cpioDir | 0o755},
	}
	for _, a := range bootApplets {
		files = append(files, cpioEntry{name: "bin/" + a, mode: cpioLink | 0o777, data: []byte("busybox")})
	}
	var list strings.Builder
	for _, mod := range mods {
		name := "lib/modules/" + filepath.Base(mod)
		files = append(files, cpioEntry{name: name, mode: cpioFile | 0o644, data: read(mod)})
		fmt.Fprintf(&list, "/%s\n", name)
	}
	return append(files, cpioEntry{name: "etc/modules", mode: cpioFile | 0o644, data: []byte(list.String())})
}

// Types of cpio entries, as in stat(2)'s st_mode.
const (
	cpioDir  = 0o040000
	cpioFile = 0o100000
	cpioLink = 0o120000
	cpioChar = 0o020000
)

// cpioEntry is a file of an initramfs.
type cpioEntry struct {
	name string    // path, without a leading slash
	mode uint32    // type and permissions
	data []byte    // contents, or the target of a symbolic link
	rdev [2]uint32 // major and minor of a device
}

// writeInitramfs writes entries as a "newc" cpio archive, the format the
// kernel unpacks into its initial root file system. Directories must come
// before what is in them. Everything belongs to root.
func writeInitramfs(path string, entries []cpioEntry) error {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	entries = append(entries, cpioEntry{name: "TRAILER!!!"})
	for i, e := range entries {
		nlink := 1
		if e.mode&0o170000 == cpioDir {
			nlink = 2
		}
		// magic, then ino mode uid gid nlink mtime filesize devmajor
		// devminor rdevmajor rdevminor namesize check, in hex.
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			i+1, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.rdev[0], e.rdev[1], len(e.name)+1, 0)
		b.WriteString(e.name)
		b.WriteByte(0)
		pad()
		b.Write(e.data)
		pad()
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("cannot write initramfs: %w", err)
	}
	return nil
}

// isStatic reports whether the ELF program at path has no interpreter,
// that is, needs no dynamic loader.
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// moduleOrder returns the files of the named kernel modules under dir and
// of every module they depend on, each after its dependencies: the order
// to load them with insmod. The dependencies are read from each module's
// .modinfo section, since Debian's package ships no modules.dep (depmod
// makes it at install time).
func moduleOrder(dir string, names []string) ([]string, error) {
	files := map[string]string{} // module name → file
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".ko") {
			files[strings.ReplaceAll(strings.TrimSuffix(d.Name(), ".ko"), "-", "_")] = path
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var order []string
	done := map[string]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		if done[name] {
			return nil
		}
		done[name] = true
		path, ok := files[name]
		if !ok {
			return fmt.Errorf("cannot find module %q under %s", name, dir)
		}
		deps, err := moduleDepends(path)
		if err != nil {
			return err
		}
		for _, dep := range deps {
			if err := visit(dep); err != nil {
				return err
			}
		}
		order = append(order, path)
		return nil
	}
	for _, name := range names {
		if err := visit(name); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleDepends returns the modules that the module at path depends on.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read module: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("cannot read module %q: no .modinfo", path)
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("cannot read module %q: %w", path, err)
	}
	for _, kv := range strings.Split(string(info), "\x00") {
		if deps, ok := strings.CutPrefix(kv, "depends="); ok && deps != "" {
			return strings.Split(deps, ","), nil
		}
	}
	return nil, nil
}

// cloudKernel returns the kernel image and modules directory of Debian's
// cloud kernel, unpacked (never installed) in the user's cache directory,
// where it is downloaded with apt-get on first use.
func cloudKernel(t *testing.T) (vmlinuz, modDir string) {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatalf("cannot find a cache directory for the kernel: %v", err)
	}
	cache = filepath.Join(cache, "metad-test")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	found := func() bool {
		images, _ := filepath.Glob(filepath.Join(cache, "linux-image-*", "boot", "vmlinuz-*"))
		if len(images) == 0 {
			return false
		}
		vmlinuz = images[len(images)-1]
		release := strings.TrimPrefix(filepath.Base(vmlinuz), "vmlinuz-")
		modDir = filepath.Join(filepath.Dir(filepath.Dir(vmlinuz)), "lib", "modules", release)
		return true
	}
	if found() {
		return vmlinuz, modDir
	}
	t.Logf("downloading %s into %s", kernelPackage, cache)
	tmp, err := os.MkdirTemp(cache, "download-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	meta := aptDownload(t, tmp, kernelPackage)
	depends, err := exec.Command("dpkg-deb", "-f", meta, "Depends").Output()
	if err != nil {
		t.Fatalf("cannot read the dependencies of %s: %v", meta, err)
	}
	image, _, _ := strings.Cut(strings.TrimSpace(string(depends)), " ")
	if !strings.HasPrefix(image, "linux-image-") {
		t.Fatalf("cannot find the kernel package: %s depends on %q", kernelPackage, depends)
	}
	deb := aptDownload(t, tmp, image)
	root := filepath.Join(tmp, "root")
	if out, err := exec.Command("dpkg", "-x", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("cannot unpack %s: %v\n%s", deb, err, out)
	}
	// Whole or not at all: a download cut short leaves only tmp.
	if err := os.Rename(root, filepath.Join(cache, image)); err != nil {
		t.Fatal(err)
	}
	if !found() {
		t.Fatalf("cannot find a kernel image in %s", image)
	}
	return vmlinuz, modDir
}

// aptDownload downloads the package name into dir and returns its file.
// When apt has no list of packages yet, it updates the lists once and
// tries again.
func aptDownload(t *testing.T, dir, name string) string {
	t.Helper()
	download := func() ([]byte, error) {
		// As root, apt would drop to the _apt user, who cannot write dir.
		cmd := exec.Command("apt-get", "-o", "APT::Sandbox::User=root", "download", name)
		cmd.Dir = dir
		return cmd.CombinedOutput()
	}
	out, err := download()
	if err != nil {
		t.Logf("apt-get download %s: %v\n%s\nupdating the package lists", name, err, out)
		if out, err := exec.Command("apt-get", "update", "-qq").CombinedOutput(); err != nil {
			t.Fatalf("cannot update the package lists: %v\n%s", err, out)
		}
		if out, err = download(); err != nil {
			t.Fatalf("cannot download %s: %v\n%s", name, err, out)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(dir, name+"_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("cannot download %s: got files %v, want one", name, debs)
	}
	return debs[0]
}
