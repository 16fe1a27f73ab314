package replay

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// clocked returns a Progress whose clock reads elapsed since its start.
func clocked(label, unit string, total int64, elapsed time.Duration) *Progress {
	p := NewProgress(label, unit, total)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p.start, p.now = start, func() time.Time { return start.Add(elapsed) }
	return p
}

// A read of a transactional log: the count is of events, the share and the
// ETA come from the offsets covered (events and markers), and the summary
// says 100% only once every offset is covered, naming the markers.
func TestProgressCountsEventsAgainstOffsets(t *testing.T) {
	p := clocked("replay: reading events", "events", 1000, 10*time.Second)
	p.Add(250)     // 250 events ...
	p.Advance(500) // ... took 500 offsets (a marker after each)
	if got, want := p.Line(), "replay: reading events: 250 events (50% of the log's 1000 offsets), 25 events/s, ETA 10s"; got != want {
		t.Errorf("line:\n got %s\nwant %s", got, want)
	}
	p.Add(249)
	p.Advance(498)
	if got := p.Line(); !strings.Contains(got, "(99% of") {
		t.Errorf("998 of 1000 offsets: %s; want 99%%, never 100%% before the end", got)
	}
	p.Add(1)
	p.Advance(2)
	if got, want := p.Summary(), "replay: reading events: done, 500 events in 10s, 50 events/s (100% of the log's 1000 offsets; the other 500 offsets are transaction markers)"; got != want {
		t.Errorf("summary:\n got %s\nwant %s", got, want)
	}
}

// Without offsets, the share is the count over the total; with no total,
// the line has no share and no ETA.
func TestProgressWithoutOffsets(t *testing.T) {
	p := clocked("views", "records", 200, 4*time.Second)
	p.Add(50)
	if got, want := p.Line(), "views: 50/200 records (25%), 12 records/s, ETA 12s"; got != want {
		t.Errorf("line:\n got %s\nwant %s", got, want)
	}
	if got, want := p.Summary(), "views: done, 50/200 records (25%) in 4s, 12 records/s"; got != want {
		t.Errorf("summary:\n got %s\nwant %s", got, want)
	}
	q := clocked("replay: writing generation", "records", 0, 2*time.Second)
	q.Add(3)
	if got, want := q.Line(), "replay: writing generation: 3 records, 1.5 records/s, 2s elapsed"; got != want {
		t.Errorf("line:\n got %s\nwant %s", got, want)
	}
	if got, want := q.Summary(), "replay: writing generation: done, 3 records in 2s, 1.5 records/s"; got != want {
		t.Errorf("summary:\n got %s\nwant %s", got, want)
	}
	// Nothing read yet: no ETA to give.
	if got := clocked("x", "events", 10, time.Second).Line(); !strings.HasSuffix(got, "ETA ?") {
		t.Errorf("nothing read: %s", got)
	}
	// An empty log is read in full at once.
	e := clocked("x", "events", 0, time.Second)
	e.Advance(0)
	if got := e.Summary(); got != "x: done, 0 events in 1s, 0.0 events/s" {
		t.Errorf("empty log: %s", got)
	}
}

// Report ends with the summary when the step succeeded, and with the
// current line and the error when it did not.
func TestProgressReportEndsWithSummaryOrError(t *testing.T) {
	var out bytes.Buffer
	p := NewProgress("step", "events", 10)
	p.Add(10)
	p.Advance(10)
	p.Report(context.Background(), &out, time.Hour)(nil)
	if got := out.String(); !strings.HasPrefix(got, "step: done, 10 events") || !strings.Contains(got, "(100% of the log's 10 offsets)") {
		t.Errorf("success: %q", got)
	}
	out.Reset()
	q := NewProgress("step", "events", 10)
	q.Add(3)
	q.Report(context.Background(), &out, time.Hour)(errors.New("broker gone"))
	if got := out.String(); !strings.HasPrefix(got, "step: 3/10 events (30%)") || !strings.HasSuffix(got, "; stopped: broker gone\n") {
		t.Errorf("failure: %q", got)
	}
}
