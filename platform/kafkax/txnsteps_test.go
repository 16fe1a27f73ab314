package kafkax

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestTxnStepsTimeEachStepFromTheEndOfTheOneBefore(t *testing.T) {
	s := StartTxnSteps()
	at := s.first
	for _, step := range []struct {
		name  string
		after time.Duration
	}{{"begin", 0}, {"send", 3 * time.Millisecond}, {"commit", 1200 * time.Millisecond}} {
		at = at.Add(step.after)
		s.mark(step.name, at)
	}
	if got, want := s.String(), "begin 0s, send 3ms, commit 1.2s"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
}

func TestTxnStepsLogOnlyASlowTransaction(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	fast := StartTxnSteps()
	fast.Mark("commit")
	fast.LogIfSlow(log, "appends", 3)
	if out.Len() != 0 {
		t.Fatalf("a fast transaction was logged: %s", out.String())
	}
	slow := StartTxnSteps()
	slow.first = slow.first.Add(-SlowTxn)
	slow.Mark("commit")
	slow.LogIfSlow(log, "appends", 3)
	if line := out.String(); !strings.Contains(line, `msg="a transaction was slow"`) || !strings.Contains(line, "steps=") || !strings.Contains(line, "appends=3") {
		t.Fatalf("the slow transaction's line: %q", line)
	}
}
