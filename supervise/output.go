package supervise

import (
	"bufio"
	"errors"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// maxLine is the longest line logged as one event; longer lines are split
// into several events, never dropped.
const maxLine = 16 << 10

// output holds the pipes of an instance whose output is watched: one per
// watched stream (stdout, stderr). The instance's death is learnt from the
// reaper, never from end of file on these pipes: a grandchild may keep them
// open long after.
type output struct {
	names []string
	r, w  []*os.File
}

// newOutput makes one pipe per stream name.
func newOutput(names ...string) (*output, error) {
	o := &output{names: names, r: make([]*os.File, len(names)), w: make([]*os.File, len(names))}
	for i := range names {
		r, w, err := os.Pipe()
		if err != nil {
			o.closeWriters()
			o.closeReaders()
			return nil, err
		}
		o.r[i], o.w[i] = r, w
	}
	return o, nil
}

// writeFD returns the child's end of the i-th pipe.
func (o *output) writeFD(i int) int { return int(o.w[i].Fd()) }

// closeWriters closes metad's copies of the child's ends, so that end of
// file comes when the last process holding them is gone.
func (o *output) closeWriters() {
	for i, w := range o.w {
		if w != nil {
			w.Close()
			o.w[i] = nil
		}
	}
}

func (o *output) closeReaders() {
	for i, r := range o.r {
		if r != nil {
			r.Close()
			o.r[i] = nil
		}
	}
}

// start logs each line of every pipe on log until end of file, and
// returns the readers, which end by themselves when every writer has
// closed its end.
func (o *output) start(pid int, log zerolog.Logger, t *tail) []*reader {
	out := make([]*reader, len(o.names))
	for i, name := range o.names {
		out[i] = startReader(o.r[i], pid, name, log, t)
		o.r[i] = nil
	}
	return out
}

// reader is the goroutine that logs the lines of one watched pipe. It
// outlives the instance when a grandchild keeps the pipe open. It can be
// stopped without closing the pipe, to hand the pipe to a new metad.
type reader struct {
	f      *os.File
	pid    int
	stream string
	log    zerolog.Logger
	tail   *tail // keeps the last lines for status; nil: none
	done   chan struct{}
	eof    bool         // set before done is closed: the pipe is at its end and closed
	seen   atomic.Int64 // when the last line was read, in Unix nanoseconds; 0: none yet
}

func startReader(f *os.File, pid int, stream string, log zerolog.Logger, t *tail) *reader {
	rd := &reader{f: f, pid: pid, stream: stream, log: log, tail: t, done: make(chan struct{})}
	go rd.run()
	return rd
}

// ended reports whether the reader has reached end of file.
func (rd *reader) ended() bool {
	select {
	case <-rd.done:
		return rd.eof
	default:
		return false
	}
}

// stop ends the goroutine and reports whether the pipe is still open (so
// can be handed over or restarted with restart).
func (rd *reader) stop() bool {
	select {
	case <-rd.done:
	default:
		rd.f.SetReadDeadline(time.Unix(1, 0))
		<-rd.done
	}
	return !rd.eof
}

// restart starts a stopped reader again on the same pipe.
func (rd *reader) restart() {
	rd.f.SetReadDeadline(time.Time{})
	rd.done = make(chan struct{})
	go rd.run()
}

// run logs every line read as one event; a final partial line is logged
// too, and so is what was read of a line when the reader is stopped.
func (rd *reader) run() {
	defer close(rd.done)
	br := bufio.NewReaderSize(rd.f, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if n := len(line); n > 0 {
			if line[n-1] == '\n' {
				line = line[:n-1]
			}
			text := string(line)
			rd.seen.Store(time.Now().UnixNano())
			rd.log.Info().Str("stream", rd.stream).Msg(text)
			if rd.tail != nil {
				rd.tail.add(text)
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, os.ErrDeadlineExceeded):
			return // stopped: the pipe stays open
		case errors.Is(err, io.EOF), errors.Is(err, os.ErrClosed), errors.Is(err, syscall.EIO):
			rd.eof = true
			rd.f.Close()
			return
		default:
			rd.log.Warn().Err(err).Str("stream", rd.stream).Msg("cannot read output")
			rd.eof = true
			rd.f.Close()
			return
		}
	}
}

// tailBytes bounds the output a service keeps for status (SPEC §13).
const tailBytes = 64 << 10

// tail is the last lines of a service's output, at most tailBytes of
// them; the oldest go first. Every reader of the service's pipes adds to
// it and status copies it: safe for concurrent use.
type tail struct {
	mu    sync.Mutex
	buf   []string
	size  int
	first int // index in buf of the oldest line kept
}

// add keeps line, forgetting the oldest lines beyond tailBytes. A line
// longer than tailBytes keeps its end.
func (t *tail) add(line string) {
	if len(line) > tailBytes {
		line = line[len(line)-tailBytes:]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, line)
	t.size += len(line)
	for t.size > tailBytes {
		t.size -= len(t.buf[t.first])
		t.buf[t.first] = ""
		t.first++
	}
	if t.first > len(t.buf)/2 { // compact now and then: amortised O(1)
		t.buf = append(t.buf[:0], t.buf[t.first:]...)
		t.first = 0
	}
}

// lines returns a copy of the lines kept, oldest first.
func (t *tail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.buf[t.first:])
}
