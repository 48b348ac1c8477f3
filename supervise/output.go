package supervise

import (
	"bufio"
	"errors"
	"io"
	"os"
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
func (o *output) start(pid int, log zerolog.Logger) []*reader {
	out := make([]*reader, len(o.names))
	for i, name := range o.names {
		out[i] = startReader(o.r[i], pid, name, log)
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
	done   chan struct{}
	eof    bool // set before done is closed: the pipe is at its end and closed
}

func startReader(f *os.File, pid int, stream string, log zerolog.Logger) *reader {
	rd := &reader{f: f, pid: pid, stream: stream, log: log, done: make(chan struct{})}
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
			rd.log.Info().Str("stream", rd.stream).Msg(string(line))
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
