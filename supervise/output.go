package supervise

import (
	"bufio"
	"errors"
	"io"
	"os"
	"syscall"

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

// start logs each line of every pipe on log until end of file. The
// goroutines end by themselves when every writer has closed its end.
func (o *output) start(log zerolog.Logger) {
	for i, name := range o.names {
		r := o.r[i]
		o.r[i] = nil
		go logLines(r, log, name)
	}
}

// logLines logs every line read from r as one event; a final partial line
// is logged too.
func logLines(r *os.File, log zerolog.Logger, stream string) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if n := len(line); n > 0 {
			if line[n-1] == '\n' {
				line = line[:n-1]
			}
			log.Info().Str("stream", stream).Msg(string(line))
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF), errors.Is(err, os.ErrClosed), errors.Is(err, syscall.EIO):
			return
		default:
			log.Warn().Err(err).Str("stream", stream).Msg("cannot read output")
			return
		}
	}
}
