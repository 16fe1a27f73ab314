package replay

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// Progress counts the work of a long step and prints a progress line at a
// fixed interval: the units done (events, records), the rate and, when the
// size of the work is known, the share done and the ETA. Add and Advance
// are safe for concurrent use. The zero value is not usable; use
// NewProgress.
//
// The size of a read of a Kafka log is known in offsets, not in records:
// a log written by transactional producers holds a commit or abort marker
// after every transaction, which takes an offset but is never handed to a
// consumer. So the share done and the ETA come from the offsets covered
// (Advance), and the count shown is of the records actually read (Add).
// Without Advance calls, the share is the count over the total.
type Progress struct {
	label string
	unit  string
	total int64 // the size of the work, in offsets (or units); 0: unknown
	done  atomic.Int64
	// covered counts the offsets read past (records and markers), when the
	// step reports them with Advance; -1 until the first Advance.
	covered atomic.Int64
	start   time.Time
	now     func() time.Time
}

// NewProgress starts counting a step of total offsets or units (0 if
// unknown).
func NewProgress(label, unit string, total int64) *Progress {
	p := &Progress{label: label, unit: unit, total: total, start: time.Now(), now: time.Now}
	p.covered.Store(-1)
	return p
}

// Add records n more units done.
func (p *Progress) Add(n int64) { p.done.Add(n) }

// Advance records n more offsets of the total read past: records and the
// transaction markers between them.
func (p *Progress) Advance(n int64) {
	if p.covered.CompareAndSwap(-1, n) {
		return
	}
	p.covered.Add(n)
}

// Done returns the units done so far.
func (p *Progress) Done() int64 { return p.done.Load() }

// Elapsed returns the time since the start.
func (p *Progress) Elapsed() time.Duration { return p.now().Sub(p.start) }

// Rate returns the units per second since the start.
func (p *Progress) Rate() float64 {
	s := p.Elapsed().Seconds()
	if s <= 0 {
		return 0
	}
	return float64(p.done.Load()) / s
}

// progressOf is what a progress line shows: done units of unit at rate
// units per second, elapsed time so far, and, when the size is known
// (total > 0), position of total offsets (or units) covered.
type progressOf struct {
	label, unit      string
	done, rate       float64
	position, total  int64
	elapsed          time.Duration
	offsetsSeparated bool // position counts offsets, not units
}

// Line returns the current progress line.
func (p *Progress) Line() string { return p.snapshot().line() }

// Summary returns the line of a finished step: what was done, in how long
// and how fast. It says 100% only if the whole total was covered.
func (p *Progress) Summary() string { return p.snapshot().summary() }

func (p *Progress) snapshot() progressOf {
	done := p.done.Load()
	s := progressOf{label: p.label, unit: p.unit, done: float64(done), rate: p.Rate(), total: p.total,
		position: done, elapsed: p.Elapsed()}
	if c := p.covered.Load(); c >= 0 {
		s.position, s.offsetsSeparated = c, true
	}
	return s
}

func (s progressOf) line() string {
	if s.total <= 0 {
		return fmt.Sprintf("%s: %.0f %s, %s %s/s, %s elapsed", s.label, s.done, s.unit, rateOf(s.rate), s.unit, s.elapsed.Round(time.Second))
	}
	pos := min(s.position, s.total)
	eta := "?"
	if pos > 0 && s.elapsed > 0 {
		// The offsets still to read, at the pace of those read so far.
		left := time.Duration(float64(s.elapsed) * float64(s.total-pos) / float64(pos))
		eta = left.Round(time.Second).String()
	}
	share := percent(pos, s.total)
	if s.offsetsSeparated {
		return fmt.Sprintf("%s: %.0f %s (%s of the log's %d offsets), %s %s/s, ETA %s",
			s.label, s.done, s.unit, share, s.total, rateOf(s.rate), s.unit, eta)
	}
	return fmt.Sprintf("%s: %.0f/%d %s (%s), %s %s/s, ETA %s",
		s.label, s.done, s.total, s.unit, share, rateOf(s.rate), s.unit, eta)
}

func (s progressOf) summary() string {
	took := s.elapsed.Round(time.Millisecond)
	if s.total <= 0 {
		return fmt.Sprintf("%s: done, %.0f %s in %s, %s %s/s", s.label, s.done, s.unit, took, rateOf(s.rate), s.unit)
	}
	pos := min(s.position, s.total)
	if s.offsetsSeparated {
		extra := ""
		if markers := pos - int64(s.done); pos == s.total && markers > 0 {
			extra = fmt.Sprintf("; the other %d offsets are transaction markers", markers)
		}
		return fmt.Sprintf("%s: done, %.0f %s in %s, %s %s/s (%s of the log's %d offsets%s)",
			s.label, s.done, s.unit, took, rateOf(s.rate), s.unit, percent(pos, s.total), s.total, extra)
	}
	return fmt.Sprintf("%s: done, %.0f/%d %s (%s) in %s, %s %s/s",
		s.label, s.done, s.total, s.unit, percent(pos, s.total), took, rateOf(s.rate), s.unit)
}

// percent is part of whole as a whole percentage, never rounded up to
// 100% before the whole is done.
func percent(part, whole int64) string {
	if whole <= 0 {
		return "?%"
	}
	pc := int64(100 * float64(part) / float64(whole))
	if pc >= 100 && part < whole {
		pc = 99
	}
	return fmt.Sprintf("%d%%", pc)
}

// rateOf formats a rate with no more digits than it is worth.
func rateOf(r float64) string {
	if r < 10 {
		return fmt.Sprintf("%.1f", r)
	}
	return fmt.Sprintf("%.0f", r)
}

// Report prints Line to w every interval until stop is called, and then
// one last line: Summary if the step succeeded (stop's err is nil), or
// Line with what stopped it.
func (p *Progress) Report(ctx context.Context, w io.Writer, every time.Duration) (stop func(err error)) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var final atomic.Pointer[error]
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				err := ctx.Err()
				if e := final.Load(); e != nil && *e != nil {
					err = *e
				}
				if err != nil {
					fmt.Fprintf(w, "%s; stopped: %v\n", p.Line(), err)
				} else {
					fmt.Fprintln(w, p.Summary())
				}
				return
			case <-t.C:
				fmt.Fprintln(w, p.Line())
			}
		}
	}()
	return func(err error) { final.Store(&err); cancel(); <-done }
}
