package tests

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// metac runs metac against the instance's local socket.
func (m *instance) metac(args ...string) (string, string, int) {
	m.t.Helper()
	m.waitEvent(1, "metad to start", msg("metad started"))
	return runBin(m.t, metacBin, append([]string{"-s", filepath.Join(m.dir, "metad.sock")}, args...)...)
}

// rewrite replaces the instance's config file.
func (m *instance) rewrite(conf string) {
	m.t.Helper()
	if err := os.WriteFile(filepath.Join(m.dir, "metad.conf"), []byte(conf), 0o644); err != nil {
		m.t.Fatal(err)
	}
}

func pidOf(ev event) int { return ev.int("pid") }

func TestReloadAppliesDifference(t *testing.T) {
	for _, how := range []string{"SIGHUP", "metac"} {
		t.Run(how, func(t *testing.T) {
			conf := "keep daemon /bin/sleep 1000\n" +
				"gone daemon /bin/sleep 1000\n" +
				"grow daemon /bin/sleep 1000\n" +
				"swap daemon /bin/sleep 1000\n"
			m := startMetad(t, runOpts{conf: conf, pid1: how == "SIGHUP" && os.Geteuid() == 0})
			pids := map[string]int{}
			for _, svc := range []string{"keep", "gone", "grow", "swap"} {
				pids[svc] = pidOf(m.waitEvent(1, svc+" to start", msg("started", svc)))
			}
			m.rewrite("keep daemon /bin/sleep 1000\n" +
				"grow daemon min=2 max=2 /bin/sleep 1000\n" +
				"swap daemon /bin/sleep 2000\n" +
				"added daemon /bin/sleep 1000\n")
			if how == "SIGHUP" {
				m.signal(syscall.SIGHUP)
			} else if out, errOut, status := m.metac("reload"); status != 0 {
				t.Fatalf("metac reload: status %d, %q %q", status, out, errOut)
			}
			ev := m.waitEvent(1, "the reload", msg("reloaded"))
			if got := fmt.Sprint(ev["added"], ev["removed"], ev["changed"]); got != "[added] [gone] [grow swap]" {
				t.Errorf("got reload %s, want [added] [gone] [grow swap]", got)
			}
			m.waitEvent(1, "the added service", msg("started", "added"))
			m.waitEvent(2, "a second grow instance", msg("started", "grow"))
			m.waitEvent(2, "the new swap instance", msg("started", "swap"))
			m.waitEvent(1, "the removed service to stop", msg("exited", "gone"))
			if n := m.count(msg("started", "keep")); n != 1 {
				t.Errorf("unchanged service started %d times, want 1", n)
			}
			if n := m.count(msg("exited", "grow")); n != 0 {
				t.Errorf("grown service lost %d instances, want 0", n)
			}
			m.waitEvent(1, "the old swap instance to stop", msg("exited", "swap"))
			if ex := m.matching(msg("exited", "swap")); pidOf(ex[0]) != pids["swap"] {
				t.Errorf("swap: pid %d exited, want the old one %d", pidOf(ex[0]), pids["swap"])
			}
		})
	}
}

func TestReloadRefusesBrokenFile(t *testing.T) {
	m := startMetad(t, runOpts{conf: "keep daemon /bin/sleep 1000\n"})
	m.waitEvent(1, "keep to start", msg("started", "keep"))
	m.rewrite("keep daemon mx=2 /bin/sleep 1000\nother daemon /nonexistent/prog\n")
	out, errOut, status := m.metac("reload")
	if status != 1 {
		t.Errorf("metac reload of a broken file: got status %d, want 1", status)
	}
	all := out + errOut
	for _, want := range []string{"metad.conf:1:13: unknown option \"mx\"", "metad.conf:2:14:"} {
		if !strings.Contains(all, want) {
			t.Errorf("metac reload output lacks %q:\n%s", want, all)
		}
	}
	if n := m.count(msg("reloaded")); n != 0 {
		t.Errorf("a broken file was applied")
	}
	out, _, _ = m.metac("--json", "list")
	if !strings.Contains(out, `"keep"`) || strings.Contains(out, `"other"`) {
		t.Errorf("services changed after a refused reload: %s", out)
	}
}

func TestWatchOutput(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(strings.Repeat("x", 1<<20)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := "talk daemon min=0 watch_output /bin/sh -c " + shq(`echo to-out; echo to-err >&2; printf partial`) + "\n" +
		"big daemon min=0 watch_output /bin/cat " + big + "\n" +
		"holder daemon watch_output /bin/sh -c " + shq(`echo holding; sleep 1000 & exit 0`) + "\n"
	m := startMetad(t, runOpts{conf: conf})
	out, errOut, status := m.metac("start", "talk")
	if status != 0 {
		t.Fatalf("metac start talk: %d %q %q", status, out, errOut)
	}
	pid := pidOf(m.waitEvent(1, "talk to start", msg("started", "talk")))
	for _, want := range []struct{ line, stream string }{{"to-out", "stdout"}, {"to-err", "stderr"}, {"partial", "stdout"}} {
		ev := m.waitEvent(1, want.line, msg(want.line, "talk"))
		if ev.int("pid") != pid || ev.str("stream") != want.stream {
			t.Errorf("%s: got pid %d stream %s, want %d %s", want.line, ev.int("pid"), ev.str("stream"), pid, want.stream)
		}
	}
	m.metac("start", "big")
	m.waitEvent(1, "big to exit", msg("exited", "big"))
	total := 0
	m.until(waitLimit, "the whole 1 MiB line", func() bool {
		total = 0
		for _, ev := range m.events {
			if ev.str("svc") == "big" && ev.str("stream") == "stdout" {
				total += len(ev.str("message"))
			}
		}
		return total == 1<<20
	})
	// The holder's shell exits at once, but its sleep keeps the pipe open:
	// metad must see the death from the reaper and restart it.
	m.waitEvent(2, "holder to be restarted", msg("started", "holder"))
	m.waitEvent(2, "the second holder to speak", msg("holding", "holder"))
}

// load is a set of clients making echo round trips.
type load struct {
	done, failed atomic.Int64
	progress     chan struct{} // a round trip ended
	stop         chan struct{}
	wg           sync.WaitGroup
}

func startLoad(addr string, clients int) *load {
	l := &load{progress: make(chan struct{}, 1), stop: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go hammer(addr, l)
	}
	return l
}

// waitFor waits until n round trips have ended in all.
func (l *load) waitFor(t *testing.T, n int64) {
	t.Helper()
	timeout := time.After(waitLimit)
	for l.done.Load() < n {
		select {
		case <-l.progress:
		case <-timeout:
			t.Fatalf("timed out after %d of %d round trips", l.done.Load(), n)
		}
	}
}

func (l *load) end() {
	close(l.stop)
	l.wg.Wait()
}

// hammer makes echo round trips on addr until the load stops, counting
// the ones that failed in any way.
func hammer(addr string, l *load) {
	stop, done, failed, wg := l.stop, &l.done, &l.failed, &l.wg
	defer wg.Done()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		err := func() error {
			c, err := net.DialTimeout("tcp", addr, waitLimit)
			if err != nil {
				return err
			}
			defer c.Close()
			fmt.Fprintf(c, "ping %d\n", i)
			c.(*net.TCPConn).CloseWrite()
			b, err := io.ReadAll(c)
			if err != nil {
				return err
			}
			if string(b) != fmt.Sprintf("ping %d\n", i) {
				return fmt.Errorf("got %q", b)
			}
			return nil
		}()
		if err != nil {
			failed.Add(1)
		}
		done.Add(1)
		select {
		case l.progress <- struct{}{}:
		default:
		}
	}
}

func TestReexecKeepsEverything(t *testing.T) {
	for _, pid1 := range []bool{false, os.Geteuid() == 0} {
		t.Run(fmt.Sprintf("pid1=%v", pid1), func(t *testing.T) {
			port := freePort(t)
			conf := fmt.Sprintf("echo stream port=%d addr=127.0.0.1 /bin/cat\n", port) +
				"three daemon min=3 max=3 /bin/sleep 1000\n" +
				"off daemon /bin/sleep 1000\n" +
				"crashy daemon backoff=1h /bin/false\n" +
				"talker daemon watch_output /bin/sh -c " + shq(`i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.1; done`) + "\n"
			m := startMetad(t, runOpts{conf: conf, pid1: pid1})
			talker := pidOf(m.waitEvent(1, "talker to start", msg("started", "talker")))
			m.waitListening("echo")
			m.waitEvent(3, "three instances", msg("started", "three"))
			m.waitEvent(1, "off to start", msg("started", "off"))
			// Its third backoff is 4s: time enough for the lists before
			// and after the re-exec to see the same state, however slow
			// the machine (the second, 2s, was not always).
			m.waitEvent(3, "crashy's third backoff", msg("backoff", "crashy"))
			if _, errOut, status := m.metac("disable", "off"); status != 0 {
				t.Fatalf("metac disable: %s", errOut)
			}
			before, _, _ := m.metac("--json", "list", "three", "off", "crashy")

			l := startLoad(fmt.Sprintf("127.0.0.1:%d", port), 4)
			l.waitFor(t, 50)
			if out, errOut, status := m.metac("reexec"); status != 0 {
				l.end()
				t.Fatalf("metac reexec: status %d, %q %q", status, out, errOut)
			}
			m.waitEvent(1, "the new image", msg("took over from the previous metad"))
			after, _, _ := m.metac("--json", "list", "three", "off", "crashy")
			if before != after {
				t.Errorf("services changed across the re-exec:\nbefore %s\nafter  %s", before, after)
			}
			// The watched pipe was handed over: the same instance's lines go on.
			took := len(m.matching(func(event) bool { return true }))
			m.until(waitLimit, "a line of talker after the re-exec", func() bool {
				for _, ev := range m.events[took:] {
					if ev.str("svc") == "talker" && ev.str("stream") == "stdout" && ev.int("pid") == talker {
						return true
					}
				}
				return false
			})
			l.waitFor(t, l.done.Load()+200)
			l.end()
			if n := l.failed.Load(); n != 0 {
				t.Errorf("%d of %d round trips failed across the re-exec", n, l.done.Load())
			}
			// An instance started before is still supervised: killed, it is
			// reaped and replaced.
			if !pid1 {
				old := pidOf(m.waitEvent(1, "a three instance", msg("started", "three")))
				syscall.Kill(old, syscall.SIGKILL)
				m.waitEvent(4, "a replacement", msg("started", "three"))
			} else {
				m.metac("kill", "three", "KILL")
				m.waitEvent(6, "replacements", msg("started", "three"))
			}
		})
	}
}

// TestReexecAnswersEveryRequest runs metac list in four loops on the
// local socket and two over the network while metad re-executes itself ten
// times: every request is answered, by one image or the next, none is cut
// off by the exec. (Before metad quiesced its control sockets and handed
// over the network one, most runs of this test lost a request or more.)
func TestReexecAnswersEveryRequest(t *testing.T) {
	port := freePort(t)
	key := writeKey(t, "a shared secret of network control")
	m := startMetad(t, runOpts{conf: "a daemon /bin/sleep 1000\nb daemon /bin/sleep 1000\n",
		args: []string{"-k", key, "-p", strconv.Itoa(port)}})
	m.waitEvent(2, "the services to start", msg("started"))
	m.waitEvent(1, "network control", msg("network control listening"))
	local := []string{"-s", filepath.Join(m.dir, "metad.sock"), "list"}
	network := []string{"-k", key, "-h", fmt.Sprintf("127.0.0.1:%d", port), "-t", "5s", "list"}
	var done, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, args := range [][]string{local, local, local, local, network, network} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, err := exec.Command(metacBin, args...).CombinedOutput()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("metac %s: %v: %s", strings.Join(args, " "), err, out))
				}
				done.Add(1)
			}
		})
	}
	for i := range 10 {
		if _, errOut, status := m.metac("reexec"); status != 0 {
			close(stop)
			wg.Wait()
			t.Fatalf("metac reexec: status %d, %q", status, errOut)
		}
		m.waitEvent(i+1, "the new image", msg("took over from the previous metad"))
		if ev := m.waitEvent(i+2, "network control in the new image", msg("network control listening")); ev["handed_over"] != true {
			t.Errorf("re-exec %d: got %v, want the socket handed over", i+1, ev)
		}
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed across ten re-execs; the first: %v", n, done.Load(), firstErr.Load())
	}
	t.Logf("%d requests across ten re-execs", done.Load())
}

// copyMetad copies the metad under test to each name in a new directory,
// for a test that replaces the binary on disk before a re-exec.
func copyMetad(t *testing.T, names ...string) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for _, n := range names {
		p := filepath.Join(dir, n)
		copyMetadTo(t, p)
		paths = append(paths, p)
	}
	return paths
}

// copyMetadTo writes the metad under test to path, mode 0755.
func copyMetadTo(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(metadBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestReexecIntoBrokenBinary(t *testing.T) {
	bin := copyMetad(t, "metad")[0]
	port := freePort(t)
	conf := fmt.Sprintf("echo stream port=%d addr=127.0.0.1 /bin/cat\n", port)
	m := startMetad(t, runOpts{conf: conf, bin: bin})
	m.waitListening("echo")
	for _, broken := range []string{"not a program at all\n", "#!/bin/sh\nexit 3\n", "#!/bin/sh\necho metad-state 999\n"} {
		os.Remove(bin)
		if err := os.WriteFile(bin, []byte(broken), 0o755); err != nil {
			t.Fatal(err)
		}
		out, errOut, status := m.metac("reexec")
		if status != 1 || !strings.Contains(out+errOut, "cannot re-execute") {
			t.Errorf("reexec into %q: got status %d, %q %q; want 1 and the reason", broken, status, out, errOut)
		}
		c := dial(t, fmt.Sprintf("127.0.0.1:%d", port))
		fmt.Fprintln(c, "still here")
		c.(*net.TCPConn).CloseWrite()
		if got, _ := io.ReadAll(c); string(got) != "still here\n" {
			t.Errorf("after a refused re-exec: got %q, want the echo", got)
		}
	}
	os.Remove(bin)
	copyMetadTo(t, bin)
	if out, errOut, status := m.metac("reexec"); status != 0 {
		t.Fatalf("reexec into the real binary: status %d, %q %q", status, out, errOut)
	}
	m.waitEvent(1, "the new image", msg("took over from the previous metad"))
}

// TestReexecIntoOlderBinary re-executes into a binary that, like metad
// before its state had a versioned envelope, answers the check with
// "metad-state 1" and reads nothing newer: it could not read this
// image's service records, so the re-exec is refused with the reason,
// logged, and metad carries on, still answering over the network.
func TestReexecIntoOlderBinary(t *testing.T) {
	bins := copyMetad(t, "metad", "metad.real")
	bin, real := bins[0], bins[1]
	port := freePort(t)
	key := writeKey(t, "a shared secret of network control")
	m := startMetad(t, runOpts{conf: "a daemon /bin/sleep 1000\n", bin: bin, args: []string{"-k", key, "-p", strconv.Itoa(port)}})
	m.waitEvent(1, "network control", msg("network control listening"))
	older := fmt.Sprintf("#!/bin/sh\nif [ -n \"$METAD_REEXEC_CHECK\" ]; then echo 'metad-state 1'; echo 'takes network'; exit 0; fi\nexec %s \"$@\"\n", shq(real))
	os.Remove(bin)
	if err := os.WriteFile(bin, []byte(older), 0o755); err != nil {
		t.Fatal(err)
	}
	out, errOut, status := m.metac("reexec")
	if status != 1 || !strings.Contains(errOut, "service records of versions 1") {
		t.Fatalf("reexec: got status %d, %q %q; want 1 and the versions it reads", status, out, errOut)
	}
	m.waitEvent(1, "the refusal in the log", msg("re-exec refused"))
	out, errOut, status = runBin(t, metacBin, "-k", key, "-h", fmt.Sprintf("127.0.0.1:%d", port), "version")
	if status != 0 {
		t.Errorf("metac over the network after the refusal: status %d, %q %q", status, out, errOut)
	}
}
