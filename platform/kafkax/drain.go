package kafkax

import (
	"context"
	"sync"
	"time"
)

// Drain hands the partitions of every Group of a process over to the rest
// of its consumer group, at a graceful stop, while the process still
// serves HTTP (see platform/service: on SIGTERM an instance first fails
// /readyz, then drains, then stops serving). A Group finds the Drain in
// the context its Run is given (WithDrain); when the Drain starts, the
// Group ends its session and leaves its consumer group, so that its
// partitions are reassigned at once instead of after the session timeout
// (a static member, KIP-345, is otherwise kept for the whole timeout: a
// closing sarama consumer does not send LeaveGroup for it, so the Group
// sends one with its group.instance.id). Once left, Run keeps waiting for
// its context to end, and the Group keeps routing requests to the new
// owners.
type Drain struct {
	once    sync.Once
	start   chan struct{}
	mu      sync.Mutex
	pending int
	changed chan struct{}
}

// NewDrain returns a Drain that has not started.
func NewDrain() *Drain {
	return &Drain{start: make(chan struct{}), changed: make(chan struct{})}
}

type drainKey struct{}

// WithDrain returns ctx carrying d, for the Groups run with it.
func WithDrain(ctx context.Context, d *Drain) context.Context {
	return context.WithValue(ctx, drainKey{}, d)
}

func drainOf(ctx context.Context) *Drain {
	d, _ := ctx.Value(drainKey{}).(*Drain)
	return d
}

// join registers a member that will leave when d starts.
func (d *Drain) join() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pending++
}

// left reports that a member registered with join has left (or stopped).
func (d *Drain) left() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pending--
	close(d.changed)
	d.changed = make(chan struct{})
}

// Leave starts the drain and waits until every Group run with d has left
// its consumer group, or until ctx ends. It reports how many had not left
// by then (0: all did).
func (d *Drain) Leave(ctx context.Context) int {
	d.once.Do(func() { close(d.start) })
	for {
		d.mu.Lock()
		n, changed := d.pending, d.changed
		d.mu.Unlock()
		if n <= 0 {
			return 0
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return n
		}
	}
}

// Started is closed when the drain starts.
func (d *Drain) Started() <-chan struct{} { return d.start }

// leaveTimeout bounds the LeaveGroup request of a static member.
const leaveTimeout = 5 * time.Second
