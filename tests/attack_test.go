package tests

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// attack makes one hostile connection to addr from src: kind 0 connects
// and resets (SO_LINGER 0, then close); kind 1 sends 256 KiB, half-closes
// and goes away without reading the echo, so that the program's writes
// fail (EPIPE, SIGPIPE).
func attack(src, addr string, kind int) error {
	c, err := dialFrom(src, addr, 2*time.Second)
	if err != nil {
		return err
	}
	switch kind {
	case 0:
		c.SetLinger(0)
	case 1:
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write(bytes.Repeat([]byte("x"), 256<<10))
		c.CloseWrite()
	}
	return c.Close()
}

// echoFrom makes one echo round trip to addr from src within limit and
// returns how long it took.
func echoFrom(src, addr string, line string, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	c, err := dialFrom(src, addr, limit)
	if err != nil {
		return time.Since(start), err
	}
	defer c.Close()
	c.SetDeadline(start.Add(limit))
	if _, err := io.WriteString(c, line); err != nil {
		return time.Since(start), err
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err == nil && string(got) != line {
		err = fmt.Errorf("got %q, want %q", got, line)
	}
	return time.Since(start), err
}

// TestIssue12StreamSurvivesHostileClients is defect 2 of issue 12 (SPEC
// §11): an echo stream service with the default crash and backoff gets a
// burst of 200 connect-and-reset and write-and-go clients from 127.0.0.2
// while 127.0.0.3 connects every 200ms for five seconds: every connection
// of 127.0.0.3 is served within 1s. A client that goes away is not a
// crash of the program, and crashes are held against the address they
// came from.
func TestIssue12StreamSurvivesHostileClients(t *testing.T) {
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	m := startMetad(t, runOpts{conf: fmt.Sprintf("echo stream port=%d addr=127.0.0.1 /bin/cat\n", port)})
	m.waitListening("echo")
	if _, err := echoFrom("127.0.0.3", addr, "before\n", waitLimit); err != nil {
		t.Fatalf("before the attack: %v", err)
	}

	const attacks, workers = 200, 8
	var next, done, failed atomic.Int64
	progress := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= attacks {
					return
				}
				if attack("127.0.0.2", addr, int(i%2)) != nil {
					failed.Add(1)
				}
				done.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		})
	}
	t.Cleanup(wg.Wait)
	// The victim starts once the attack is well under way.
	timeout := time.After(waitLimit)
	for done.Load() < attacks/4 {
		select {
		case <-progress:
		case <-timeout:
			t.Fatalf("the attack is stuck at %d connections", done.Load())
		}
	}

	const limit = time.Second
	tick := time.NewTicker(200 * time.Millisecond) // the victim's pace, not a wait for an event
	defer tick.Stop()
	var slow []string
	for i := range 25 {
		took, err := echoFrom("127.0.0.3", addr, fmt.Sprintf("victim %d\n", i), limit)
		if err != nil {
			slow = append(slow, fmt.Sprintf("#%d (attack at %d): %v after %v", i, done.Load(), err, took.Round(time.Millisecond)))
		}
		<-tick.C
	}
	next.Store(attacks) // what is left of the burst is not needed
	wg.Wait()
	if len(slow) > 0 {
		t.Errorf("%d of 25 connections from 127.0.0.3 not served within %v during the attack (%d crashes logged):\n%s",
			len(slow), limit, m.count(msg("backoff", "echo")), joinLines(slow))
	}
	t.Logf("%d attacks (%d refused or failed at the client)", done.Load(), failed.Load())
	if _, err := echoFrom("127.0.0.3", addr, "after\n", limit); err != nil {
		t.Errorf("after the attack: %v", err)
	}
}

func joinLines(lines []string) string {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}
