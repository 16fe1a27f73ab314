package e2e

import (
	"slices"
	"strings"
	"testing"
)

// The fault-free minutes leave a quiet minute at each end of the span the
// soak's aims are measured over, even when every other minute has a fault.
func TestSoakFaultFreeMinutesLeaveQuietEnds(t *testing.T) {
	for _, tc := range []struct {
		n     int
		free  []int
		quiet string // the quiet minutes soakAims compares
	}{
		{n: 30, free: []int{0, 4, 5, 28, 29}, quiet: "(5 → 29)"},
		{n: 8, free: []int{0, 4, 5, 6, 7}, quiet: "(5 → 7)"},
		{n: 5, free: []int{0, 3, 4}, quiet: "(0 → 4)"},
	} {
		var free []int
		minutes := make([]soakMinute, tc.n)
		for i := range minutes {
			minutes[i].writeP99, minutes[i].readP99 = 100, 10
			if soakFaultFree(i, tc.n) {
				free = append(free, i)
				continue
			}
			minutes[i].faults = []string{"broker killed 10 s"}
		}
		if !slices.Equal(free, tc.free) {
			t.Errorf("n=%d: fault-free minutes %v, want %v", tc.n, free, tc.free)
		}
		aims := soakAims(nil, minutes)
		for _, figure := range []string{"write p99 in quiet minutes " + tc.quiet, "read p99 in quiet minutes " + tc.quiet} {
			if !strings.Contains(aims, figure) {
				t.Errorf("n=%d: the aims do not compare %q:\n%s", tc.n, figure, aims)
			}
		}
	}
}
