package kafkax

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// Leave starts the drain and waits for every member that joined to leave,
// or for its context.
func TestDrainLeave(t *testing.T) {
	d := NewDrain()
	d.join()
	d.join()
	select {
	case <-d.Started():
		t.Fatal("started before Leave")
	default:
	}
	go func() {
		<-d.Started()
		d.left()
		time.Sleep(50 * time.Millisecond)
		d.left()
	}()
	start := time.Now()
	if n := d.Leave(context.Background()); n != 0 {
		t.Fatalf("Leave: %d members left to leave", n)
	}
	if time.Since(start) < 40*time.Millisecond {
		t.Fatal("Leave did not wait for the second member")
	}

	d = NewDrain()
	d.join()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if n := d.Leave(ctx); n != 1 {
		t.Fatalf("Leave with a member that never leaves: %d, want 1", n)
	}
	if n := NewDrain().Leave(context.Background()); n != 0 {
		t.Fatalf("a drain without members: %d", n)
	}
}

// Acquire holds a partition until release; once a drain quiesces the
// group, Acquire refuses and quiesce returns when the last release comes.
func TestAcquireAndQuiesce(t *testing.T) {
	g := &Group{changed: make(chan struct{}), log: slog.New(slog.DiscardHandler)}
	release, ok := g.Acquire(3, 0)
	if !ok {
		t.Fatal("Acquire refused before a drain")
	}
	done := make(chan struct{})
	go func() { g.quiesce(context.Background()); close(done) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("quiesce returned with a request in flight")
	default:
	}
	if _, ok := g.Acquire(3, 0); ok {
		t.Fatal("Acquire accepted while quiescing")
	}
	release()
	release() // twice is harmless
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("quiesce did not return after the release")
	}
}
