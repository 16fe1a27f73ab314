package replay

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// Progress counts the work of a long step and prints a progress line at a
// fixed interval: done/total, percent, rate and ETA. Add is safe for
// concurrent use. The zero value is not usable; use NewProgress.
type Progress struct {
	label string
	unit  string
	total int64
	done  atomic.Int64
	start time.Time
}

// NewProgress starts counting a step of total units (0 if unknown).
func NewProgress(label, unit string, total int64) *Progress {
	return &Progress{label: label, unit: unit, total: total, start: time.Now()}
}

// Add records n more units done.
func (p *Progress) Add(n int64) { p.done.Add(n) }

// Done returns the units done so far.
func (p *Progress) Done() int64 { return p.done.Load() }

// Rate returns the units per second since the start.
func (p *Progress) Rate() float64 {
	s := time.Since(p.start).Seconds()
	if s <= 0 {
		return 0
	}
	return float64(p.done.Load()) / s
}

// Elapsed returns the time since the start.
func (p *Progress) Elapsed() time.Duration { return time.Since(p.start) }

// Line returns the current progress line.
func (p *Progress) Line() string {
	done, rate := p.done.Load(), p.Rate()
	if p.total <= 0 {
		return fmt.Sprintf("%s: %d %s, %.0f %s/s, %s elapsed", p.label, done, p.unit, rate, p.unit, p.Elapsed().Round(time.Second))
	}
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(max(0, p.total-done))/rate) * time.Second).Round(time.Second).String()
	}
	return fmt.Sprintf("%s: %d/%d %s (%.0f%%), %.0f %s/s, ETA %s", p.label, done, p.total, p.unit,
		100*float64(done)/float64(p.total), rate, p.unit, eta)
}

// Report prints Line to w every interval until ctx ends or stop is
// called, and once more at the end.
func (p *Progress) Report(ctx context.Context, w io.Writer, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				fmt.Fprintln(w, p.Line())
				return
			case <-t.C:
				fmt.Fprintln(w, p.Line())
			}
		}
	}()
	return func() { cancel(); <-done }
}
