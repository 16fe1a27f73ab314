package kafkax

import (
	"log/slog"
	"strings"
	"time"
)

// SlowTxn is how long a transaction runs before LogIfSlow logs it: a
// healthy one takes milliseconds, one under heavy load tens of them.
const SlowTxn = time.Second

// TxnSteps times the steps of one transaction (begin, send, commit, ...)
// so that a slow one tells where it waited. Start it with StartTxnSteps;
// it is not safe for concurrent use.
type TxnSteps struct {
	first, last time.Time
	steps       []string
}

// StartTxnSteps starts timing a transaction now.
func StartTxnSteps() TxnSteps {
	now := time.Now()
	return TxnSteps{first: now, last: now}
}

// Mark records that step ended now: it took the time since the step
// before it ended (since the start, for the first).
func (s *TxnSteps) Mark(step string) { s.mark(step, time.Now()) }

func (s *TxnSteps) mark(step string, now time.Time) {
	s.steps = append(s.steps, step+" "+now.Sub(s.last).Round(time.Millisecond).String())
	s.last = now
}

// String lists the steps in order with their times: "begin 0s, send
// 3ms, commit 1.2s".
func (s *TxnSteps) String() string { return strings.Join(s.steps, ", ") }

// LogIfSlow logs at WARN, with the steps, a transaction that has run for
// SlowTxn or more since StartTxnSteps, with attrs.
func (s *TxnSteps) LogIfSlow(log *slog.Logger, attrs ...any) {
	if took := time.Since(s.first); took >= SlowTxn {
		log.Warn("a transaction was slow", append([]any{"took", took.Round(time.Millisecond), "steps", s.String()}, attrs...)...)
	}
}
