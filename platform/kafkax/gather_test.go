package kafkax

import (
	"fmt"
	"testing"
	"time"
)

// Gather takes what arrives within the linger and what is queued, up to
// the bound, and nothing more.
func TestGather(t *testing.T) {
	one := func(int) int { return 1 }
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for _, tc := range []struct {
		name    string
		queued  []int
		late    bool // 100 arrives 20 ms after the call
		linger  time.Duration
		max     int
		want    string
		atLeast time.Duration // the call takes at least this
		atMost  time.Duration // and at most this
	}{
		{"no linger: the queued ones", []int{2, 3, 4}, true, 0, 10, "[1 2 3 4]", 0, time.Second},
		{"no linger: up to the bound", []int{2, 3, 4, 5}, false, 0, 3, "[1 2 3]", 0, time.Second},
		{"a linger: one that arrives within it", nil, true, 5 * time.Second, 2, "[1 100]", 20 * time.Millisecond, 4 * time.Second},
		{"a linger: nothing arrives", nil, false, 30 * time.Millisecond, 10, "[1]", 30 * time.Millisecond, 4 * time.Second},
	} {
		reqs := make(chan int, 10)
		for _, r := range tc.queued {
			reqs <- r
		}
		if tc.late {
			go func() { time.Sleep(20 * time.Millisecond); reqs <- 100 }()
		}
		began := time.Now()
		got := Gather([]int{1}, 1, reqs, nil, tc.linger, timer, one, tc.max)
		took := time.Since(began)
		if fmt.Sprint(got) != tc.want || took < tc.atLeast || took > tc.atMost {
			t.Errorf("%s: gathered %v in %v, want %s in [%v, %v]", tc.name, got, took, tc.want, tc.atLeast, tc.atMost)
		}
	}
}
