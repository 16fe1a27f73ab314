package kafkax

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// When no session can start (the coordinator is unreachable), the
// partitions of the last session stay served, the caught-up ones only, and
// each stops being served as soon as the group's table names another owner.
func TestDetachedGroupServesTheLastSessionUntilTheTableMovesOn(t *testing.T) {
	self, other := Member{ID: "a", URL: "http://a"}, Member{ID: "b", URL: "http://b"}
	g := &Group{
		opts: GroupOptions{Self: self}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		owned: map[int32]*sessionPartition{}, changed: make(chan struct{}),
		last: map[int32]*sessionPartition{
			1: {behind: map[string]bool{}},
			2: {behind: map[string]bool{"events": true}},
		},
		tableAge: time.Now(), // no refresh from Route in this test
	}
	g.detach()
	route := func(p int32) (Member, bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		return g.Route(ctx, p)
	}
	if _, self, err := route(1); err != nil || !self {
		t.Fatalf("caught-up partition 1: self=%t, %v; want served here", self, err)
	}
	if _, _, err := route(2); err == nil {
		t.Fatal("partition 2 was behind; it must not be served while detached")
	}
	g.mu.Lock()
	g.table = Assignment{State: "Stable", owners: map[int32]Member{1: other}}
	g.mu.Unlock()
	if m, self, err := route(1); err != nil || self || m.ID != "b" {
		t.Fatalf("after the table moved partition 1 to b: %s self=%t %v; want b", m.ID, self, err)
	}
}
