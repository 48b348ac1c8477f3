package netctl

import (
	"context"
	"sync"
)

// gate lets a server's loop be parked between requests, and counts the
// requests being served, for Quiesce: the control socket and the network
// control socket are handed to the next image of metad (re-exec) with no
// request half served.
type gate struct {
	mu    sync.Mutex
	busy  int           // requests being served
	idle  chan struct{} // closed when busy drops to 0; replaced when it rises from 0
	quiet chan struct{} // while quiesced: closed on resume; nil otherwise
	// parked is closed by the loop when it has stopped taking requests
	// for the current quiesce.
	parked chan struct{}
}

// begin and end count a request being served outside the loop.
func (g *gate) begin() {
	g.mu.Lock()
	if g.busy == 0 {
		g.idle = make(chan struct{})
	}
	g.busy++
	g.mu.Unlock()
}

func (g *gate) end() {
	g.mu.Lock()
	if g.busy--; g.busy == 0 {
		close(g.idle)
	}
	g.mu.Unlock()
}

// answered returns a channel that is closed once no request is being
// served.
func (g *gate) answered() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy == 0 {
		done := make(chan struct{})
		close(done)
		return done
	}
	return g.idle
}

// quiesce asks the loop to park, calls wake to interrupt its wait for the
// next request, and waits until it has parked and every request begun is
// served, or until ctx is done (then it returns ctx's error, quiesced all
// the same). resume lets the loop go on, after calling unwake; call it
// once.
func (g *gate) quiesce(ctx context.Context, wake, unwake func()) (resume func(), err error) {
	quiet, parked := make(chan struct{}), make(chan struct{})
	g.mu.Lock()
	g.quiet, g.parked = quiet, parked
	g.mu.Unlock()
	wake()
	resume = func() {
		g.mu.Lock()
		g.quiet, g.parked = nil, nil
		g.mu.Unlock()
		unwake()
		close(quiet)
	}
	select {
	case <-parked:
	case <-ctx.Done():
		return resume, ctx.Err()
	}
	select {
	case <-g.answered():
		return resume, nil
	case <-ctx.Done():
		return resume, ctx.Err()
	}
}

// hold parks the loop while quiesced, until resume or ctx is done. The
// loop calls it before it waits for each request.
func (g *gate) hold(ctx context.Context) {
	g.mu.Lock()
	quiet, parked := g.quiet, g.parked
	g.parked = nil
	g.mu.Unlock()
	if quiet == nil {
		return
	}
	if parked != nil {
		close(parked)
	}
	select {
	case <-quiet:
	case <-ctx.Done():
	}
}
