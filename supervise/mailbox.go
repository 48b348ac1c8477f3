package supervise

import "sync"

// mailbox is an unbounded queue with a wake-up channel. put never blocks,
// so the reaper can hand exits to a busy service goroutine without waiting
// for it; the owner drains everything at once after a wake-up.
type mailbox[T any] struct {
	mu    sync.Mutex
	items []T
	wake  chan struct{}
}

func newMailbox[T any]() *mailbox[T] {
	return &mailbox[T]{wake: make(chan struct{}, 1)}
}

// put appends x and wakes the owner. Safe for concurrent use.
func (m *mailbox[T]) put(x T) {
	m.mu.Lock()
	m.items = append(m.items, x)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// take removes and returns everything queued so far.
func (m *mailbox[T]) take() []T {
	m.mu.Lock()
	items := m.items
	m.items = nil
	m.mu.Unlock()
	return items
}
