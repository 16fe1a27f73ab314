package loop_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"profiles/platform/internal/loop"
)

func TestEveryCallsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		loop.Every(ctx, time.Millisecond, func() {
			if n.Add(1) == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Every did not return after its context was cancelled")
	}
	if got := n.Load(); got < 3 {
		t.Fatalf("f called %d times, want at least 3", got)
	}
}
