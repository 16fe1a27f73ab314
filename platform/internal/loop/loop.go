// Package loop runs periodic work for the platform packages.
package loop

import (
	"context"
	"time"
)

// Every calls f every d until ctx is done, then returns. The first call is
// one period after Every starts; calls never overlap, and a call that
// outlasts the period delays the next rather than queueing it. d must be
// positive.
func Every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}
