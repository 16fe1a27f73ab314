package kafkax

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// A read's context from Interrupt lives while the partition is served, and
// is cancelled soon after the partition is lost, a drain begins, or the
// lease runs out (which nothing announces).
func TestInterruptCutsAReadShortOnceThePartitionIsNotServed(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(g *Group)
	}{
		{"revoked", func(g *Group) { delete(g.owned, 1); g.notifyLocked() }},
		{"drain", func(g *Group) { g.quiescing = true; g.notifyLocked() }},
		{"lease", func(g *Group) { g.lease.end() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &Group{
				opts: GroupOptions{Self: Member{ID: "a", URL: "http://a"}}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				owned: map[int32]*sessionPartition{1: {behind: map[string]bool{}}}, changed: make(chan struct{}),
				lease: lease{until: time.Now().Add(time.Hour)},
			}
			ctx, cancel := g.Interrupt(context.Background(), 1, 0)
			defer cancel()
			select {
			case <-ctx.Done():
				t.Fatal("cut short while the partition was served")
			case <-time.After(3 * interruptPoll):
			}
			g.mu.Lock()
			tc.lose(g)
			g.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(3 * interruptPoll):
				t.Fatal("not cut short after the partition stopped being served")
			}
		})
	}
}
