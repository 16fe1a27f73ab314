package e2e

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
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

// The soak's CPU column: nothing for a process on its first sample or
// after its pid changed (a restart), the cores it used since the last
// sample otherwise, and a JIT figure for brokers only.
func TestSoakCPUSamplerSkipsNewAndRestartedProcesses(t *testing.T) {
	pid := os.Getpid()
	var c cpuSampler
	cores, jit := c.sample(map[string]int{"broker-1": pid, "query-svc-0": pid})
	if len(cores) != 0 || len(jit) != 0 {
		t.Fatalf("first sample: cores %v, jit %v; want none", cores, jit)
	}
	for t0 := time.Now(); time.Since(t0) < 200*time.Millisecond; {
	}
	cores, jit = c.sample(map[string]int{"broker-1": pid, "query-svc-0": pid})
	if cores["broker-1"] <= 0 || cores["query-svc-0"] <= 0 {
		t.Errorf("after a busy spin: cores %v, want both above 0", cores)
	}
	if _, ok := jit["broker-1"]; !ok || len(jit) != 1 {
		t.Errorf("jit %v: want a figure for the broker only", jit)
	}
	cores, _ = c.sample(map[string]int{"broker-1": pid, "query-svc-0": pid + 1})
	if _, ok := cores["query-svc-0"]; ok {
		t.Errorf("a restarted process (new pid) has a CPU figure: %v", cores)
	}
	if got := orDash(cores, "query-svc-0"); got != "–" {
		t.Errorf("orDash of a missing figure = %q", got)
	}
}

// The soak's memory table splits each service's RSS growth into the
// executable's pages, the Go heap in use, the free heap the runtime keeps
// and the rest, and the heap's growth into the block caches, the
// memtables and the rest; a process with no heap figure (a broker) has no
// row.
func TestSoakMemoryTableSplitsTheGrowth(t *testing.T) {
	minutes := make([]soakMinute, 8)
	sample := func(rss, file, heap, cache, memtables, kept float64) soakMinute {
		return soakMinute{
			rss: map[string]float64{"query-svc-0": rss, "broker-1": 700}, rssFile: map[string]float64{"query-svc-0": file, "broker-1": 10},
			mem: map[string]serviceMemory{"query-svc-0": {heap: heap, cache: cache, memtables: memtables, kept: kept}},
		}
	}
	for i := range minutes {
		minutes[i] = sample(90, 20, 40, 5, 4, 10) // before soakFrom: not compared
	}
	minutes[5] = sample(100, 20, 50, 10, 4, 10)
	minutes[7] = sample(130, 25, 60, 16, 7, 12)
	table := memoryGrowth([]string{"broker-1", "query-svc-0"}, minutes)
	// RSS +30: the executable +5, the heap in use +10, the free heap kept
	// +2, the rest +13; the heap +10: the caches +6, the memtables +3, the
	// rest +1.
	want := "| query-svc-0 | 100 → 130 | 20 → 25 | 50 → 60 | 10 → 16 | 4 → 7 | 10 → 12 | 13 | 1 |"
	if !strings.Contains(table, want+"\n") {
		t.Errorf("the memory table has no row %q:\n%s", want, table)
	}
	if strings.Contains(table, "broker-1") {
		t.Errorf("the memory table has a row for a broker:\n%s", table)
	}
}
