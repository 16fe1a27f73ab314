package kafkax

import (
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
)

// Between two sessions (Cleanup until the next Setup has set its
// partitions up) the instance owns nothing: it is not ready, and
// InSession runs nothing, so that nothing drops state that the next
// Setup is about to resume from.
func TestBetweenSessionsTheGroupIsNotReadyAndRunsNothingInSession(t *testing.T) {
	g := &Group{
		opts: GroupOptions{Group: "g"}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		joined: true, inSession: true, changed: make(chan struct{}),
		owned: map[int32]*sessionPartition{3: {behind: map[string]bool{}}, 1: {behind: map[string]bool{}}},
	}
	if err := g.Ready(); err != nil {
		t.Fatalf("in a session, caught up: Ready = %v", err)
	}
	var got []int32
	if !g.InSession(func(owned []int32) { got = owned }) || !slices.Equal(got, []int32{1, 3}) {
		t.Fatalf("InSession in a session gave %v; want [1 3]", got)
	}

	if err := g.Cleanup(nil); err != nil {
		t.Fatal(err)
	}
	if err := g.Ready(); !errors.Is(err, ErrBetweenSessions) {
		t.Fatalf("between sessions: Ready = %v; want ErrBetweenSessions", err)
	}
	if g.InSession(func([]int32) { t.Fatal("InSession ran between sessions") }) {
		t.Fatal("InSession reported a session between two")
	}

	// Detached (no session can start), the instance answers for what the
	// last session read, and is ready for it, but InSession still runs
	// nothing: a session may start at any moment.
	g.detach()
	if err := g.Ready(); err != nil {
		t.Fatalf("detached with caught-up partitions: Ready = %v", err)
	}
	if g.InSession(func([]int32) { t.Fatal("InSession ran while detached") }) {
		t.Fatal("InSession reported a session while detached")
	}
}
