package kafkax

import (
	"testing"
	"time"
)

func TestLease(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	l := newLease(10 * time.Second) // lasts 8s from each accepted heartbeat's send
	var zero lease
	if zero.held(t0) || l.held(t0) {
		t.Fatal("a new lease must have run out")
	}
	for _, step := range []struct {
		name      string
		sent, now int // ms; sent < 0: no renewal, only a check at now
		wasOut    bool
		heldAt    int
		wantHeld  bool
		notHeldAt int
	}{
		{"first heartbeat", 0, 5, true, 7999, true, 8000},
		{"renewed in time", 2000, 2003, false, 9999, true, 10000},
		{"a late answer to an older heartbeat does not shorten it", 1000, 2500, false, 9999, true, 10000},
		{"renewed after it ran out (a frozen member)", 30000, 30002, true, 37999, true, 38000},
	} {
		if got := l.renew(at(step.sent), at(step.now)); got != step.wasOut {
			t.Fatalf("%s: renew reported wasOut=%v", step.name, got)
		}
		if l.held(at(step.heldAt)) != step.wantHeld || l.held(at(step.notHeldAt)) {
			t.Fatalf("%s: held until %v", step.name, l.until.Sub(t0))
		}
	}
	l.end()
	if l.held(at(30003)) {
		t.Fatal("an ended lease must not hold")
	}
}
