package kafkax

import (
	"context"
	"errors"
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
		lease:    lease{until: time.Now().Add(time.Hour)},
	}
	g.detach()
	route := func(p int32) (Member, bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		return g.Route(ctx, p)
	}
	if _, self, err := route(1); err != nil || !self || !servesNow(g, 1) {
		t.Fatalf("caught-up partition 1: self=%t, %v; want served here", self, err)
	}
	if _, _, err := route(2); err == nil || servesNow(g, 2) {
		t.Fatal("partition 2 was behind; it must not be served while detached")
	}
	g.mu.Lock()
	g.table = Assignment{State: "Stable", owners: map[int32]Member{1: other}}
	g.mu.Unlock()
	if servesNow(g, 1) {
		t.Fatal("after the table moved partition 1 to b: ServesNow still says here")
	}
	if m, self, err := route(1); err != nil || self || m.ID != "b" {
		t.Fatalf("after the table moved partition 1 to b: %s self=%t %v; want b", m.ID, self, err)
	}
}

// ServesNow answers what Route would at once, and never waits: a
// quiescing member (a drain) routes no new request to itself.
func TestServesNowIsRoutesAnswer(t *testing.T) {
	g := &Group{
		opts: GroupOptions{Self: Member{ID: "a", URL: "http://a"}}, log: slog.New(slog.DiscardHandler),
		owned: map[int32]*sessionPartition{1: {behind: map[string]bool{}}, 2: {behind: map[string]bool{"events": true}}}, changed: make(chan struct{}),
		tableAge: time.Now(),
		lease:    lease{until: time.Now().Add(time.Hour)},
	}
	if !servesNow(g, 1) || servesNow(g, 2) || servesNow(g, 3) {
		t.Fatalf("ServesNow: 1 %t, 2 (behind) %t, 3 (not owned) %t; want true, false, false", servesNow(g, 1), servesNow(g, 2), servesNow(g, 3))
	}
	g.mu.Lock()
	g.quiescing = true
	g.mu.Unlock()
	if servesNow(g, 1) {
		t.Fatal("a quiescing member says it serves a new request")
	}
	g.mu.Lock()
	g.quiescing = false
	g.lease.end()
	g.mu.Unlock()
	if servesNow(g, 1) {
		t.Fatal("served without a lease")
	}
}

// Detached, a partition is served only while the last session's lease
// holds: this instance may be the only one cut off from the brokers, and
// another may own the partition and serve newer writes once it runs out.
func TestDetachedGroupServesOnlyUnderTheLease(t *testing.T) {
	g := &Group{
		opts: GroupOptions{Self: Member{ID: "a", URL: "http://a"}}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		owned: map[int32]*sessionPartition{}, changed: make(chan struct{}), joined: true,
		last:     map[int32]*sessionPartition{1: {behind: map[string]bool{}}},
		tableAge: time.Now(),
		lease:    lease{until: time.Now().Add(time.Hour)},
	}
	g.detach()
	if !g.Serving(1) || g.Ready() != nil {
		t.Fatal("detached under the lease: not served")
	}
	g.mu.Lock()
	g.lease.end()
	g.mu.Unlock()
	if g.Serving(1) || !errors.Is(g.Ready(), ErrLeaseExpired) {
		t.Fatal("detached without a lease: still served")
	}
}

func servesNow(g *Group, p int32) bool {
	_, ok := g.ServesNow(p)
	return ok
}
