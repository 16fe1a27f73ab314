package kafkax

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// fakeSession is the part of a sarama session that Group.handle uses.
type fakeSession struct {
	sarama.ConsumerGroupSession
	ctx context.Context
}

func (s fakeSession) Context() context.Context { return s.ctx }

// A batch that Handle cannot apply (a full disk) is handed to it again,
// with pauses, until it applies; meanwhile its partition is not served and
// Ready says why. Before, ConsumeClaim returned: the partition stopped
// reading for the rest of the session while it was still served, from a
// view that no longer moved.
func TestGroupRetriesABatchItCannotApplyAndServesNothingMeanwhile(t *testing.T) {
	full := errors.New("disk full")
	var calls atomic.Int32
	var failUntil atomic.Int32
	failUntil.Store(4)
	g := &Group{
		opts: GroupOptions{Group: "g", Handle: func(_ context.Context, _ string, _ int32, _ []*sarama.ConsumerMessage) error {
			if calls.Add(1) <= failUntil.Load() {
				return full
			}
			return nil
		}},
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		owned:   map[int32]*sessionPartition{3: {behind: map[string]bool{}, end: map[string]int64{"t": 10}}},
		changed: make(chan struct{}), joined: true, inSession: true,
		lease: lease{until: time.Now().Add(time.Hour)},
	}
	if !g.Serving(3) || g.Ready() != nil {
		t.Fatal("a caught-up partition under the lease is not served")
	}
	batch := []*sarama.ConsumerMessage{{Topic: "t", Partition: 3, Offset: 7}}
	done := make(chan bool)
	start := time.Now()
	go func() { done <- g.handle(fakeSession{ctx: context.Background()}, "t", 3, batch) }()
	for calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	if g.Serving(3) {
		t.Error("partition 3 is served while its records cannot be applied")
	}
	if err := g.Ready(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Ready while failing: %v; want the error named", err)
	}
	if !<-done {
		t.Fatal("handle gave up although the session went on")
	}
	if n := calls.Load(); n != 5 {
		t.Errorf("Handle called %d times, want 5 (4 failures, then success)", n)
	}
	// Pauses of 100, 200, 400 and 800 ms: no hot loop.
	if d := time.Since(start); d < 1400*time.Millisecond {
		t.Errorf("4 retries took %s; want pauses between them", d)
	}
	g.mu.Lock()
	failing := len(g.owned[3].failing)
	g.mu.Unlock()
	if failing != 0 {
		t.Error("the failure is still recorded after the batch applied")
	}
	// ConsumeClaim marks the partition caught up again once it is at its
	// end; until then it stays unserved.
	if g.Serving(3) {
		t.Error("served again before it caught up")
	}
	g.caughtUp("t", 3)
	if !g.Serving(3) || g.Ready() != nil {
		t.Error("not served after catching up again")
	}

	// A session that ends while the batch fails ends handle, unapplied.
	failUntil.Store(1 << 30)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(300 * time.Millisecond); cancel() }()
	if g.handle(fakeSession{ctx: ctx}, "t", 3, batch) {
		t.Error("handle reported success for a batch that never applied")
	}
}

// A batch that fails while Unfit names a reason (the disk is full, not
// one batch) steps the instance aside: handle gives up at once, the
// session ends so that Run leaves the group, and Ready says why until the
// instance joins again. Without the step, the instance would keep its
// partitions, unserved, until its disk had space again.
func TestGroupStepsAsideWhenUnfit(t *testing.T) {
	full := errors.New("disk full")
	var calls atomic.Int32
	var unfit atomic.Bool
	ended := make(chan struct{})
	g := &Group{
		opts: GroupOptions{Group: "g",
			Handle: func(context.Context, string, int32, []*sarama.ConsumerMessage) error { calls.Add(1); return full },
			Unfit: func() error {
				if unfit.Load() {
					return full
				}
				return nil
			}},
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		owned:   map[int32]*sessionPartition{3: {behind: map[string]bool{}, end: map[string]int64{"t": 10}}},
		changed: make(chan struct{}), joined: true, inSession: true,
		lease:      lease{until: time.Now().Add(time.Hour)},
		endSession: func() { close(ended) },
	}
	batch := []*sarama.ConsumerMessage{{Topic: "t", Partition: 3, Offset: 7}}

	// While Unfit says nil, a failing batch is retried in place.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(250 * time.Millisecond); cancel() }()
	if g.handle(fakeSession{ctx: ctx}, "t", 3, batch) {
		t.Fatal("handle reported success for a batch that never applied")
	}
	if n := calls.Load(); n < 2 {
		t.Fatalf("Handle called %d times while Unfit said nil; want retries", n)
	}
	select {
	case <-ended:
		t.Fatal("stepped aside while Unfit said nil")
	default:
	}

	unfit.Store(true)
	calls.Store(0)
	start := time.Now()
	if g.handle(fakeSession{ctx: context.Background()}, "t", 3, batch) {
		t.Fatal("handle reported success while unfit")
	}
	if d := time.Since(start); d > 100*time.Millisecond || calls.Load() != 1 {
		t.Errorf("stepping aside took %s and %d calls of Handle; want one call, at once", d, calls.Load())
	}
	select {
	case <-ended:
	case <-time.After(time.Second):
		t.Fatal("the session did not end: Run would not leave the group")
	}
	err := g.Ready()
	if err == nil || !errors.Is(err, full) || !strings.Contains(err.Error(), "out of group g") {
		t.Errorf("Ready while aside: %v; want the reason and the step named", err)
	}

	// Out of the group, stayAside asks Unfit until it says nil; a stop
	// first returns no consumer group.
	stayAsidePoll = 10 * time.Millisecond
	defer func() { stayAsidePoll = time.Second }()
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if cg := g.stayAside(ctx, nil, nil); cg != nil {
		t.Error("stayAside joined while still unfit")
	}
	if g.Ready() == nil {
		t.Error("ready while still aside")
	}
}
