package bench

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// spin uses about d of CPU on the calling goroutine's thread.
func spin(d time.Duration) {
	for t0 := time.Now(); time.Since(t0) < d; {
		for i := 0; i < 1e5; i++ {
			_ = i * i
		}
	}
}

func TestThreadCPUSecondsCountsOnlyTheMatchingThreads(t *testing.T) {
	spin(300 * time.Millisecond)
	pid := os.Getpid()
	whole, err := CPUSeconds(pid)
	if err != nil {
		t.Fatal(err)
	}
	all, err := ThreadCPUSeconds(pid, func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	none, err := ThreadCPUSeconds(pid, func(string) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	// Every thread of a Go test binary lives as long as the process, so
	// the threads add up to the process, give or take the clock ticks of
	// the moments between the reads.
	if all <= 0 || all > whole+0.05 || all < whole-0.1 {
		t.Errorf("threads %.2f s, process %.2f s: the threads should add up to the process", all, whole)
	}
	if none != 0 {
		t.Errorf("no thread matched, yet %.2f s", none)
	}
	if runtime.GOOS == "linux" {
		if _, err := ThreadCPUSeconds(1<<30, JITThread); err == nil {
			t.Error("a process that does not exist has no threads to read")
		}
	}
}

func TestJITThreadNamesHotSpotsCompilers(t *testing.T) {
	for comm, want := range map[string]bool{
		"C2 CompilerThre": true, // as the kernel cuts "C2 CompilerThread0"
		"C1 CompilerThre": true,
		"data-plane-kafk": false,
		"GC Thread#0":     false,
		"java":            false,
	} {
		if got := JITThread(comm); got != want {
			t.Errorf("JITThread(%q) = %v, want %v", comm, got, want)
		}
	}
}

// The broker's JIT threads are a part of the broker's CPU: counting them
// again would inflate the CPU per request.
func TestCPUPerRequestCountsTheBrokersJITOnce(t *testing.T) {
	r := &Report{Scenarios: []ScenarioResult{{
		Name:   "post",
		Closed: Result{Throughput: 1000},
		CPU: map[string]map[string]float64{"closed": {
			"bench": 0.5, "kafka": 0.8, kafkaJIT: 0.3, "command-svc-0": 0.2,
		}},
	}}}
	r.finish(time.Now())
	if got := r.Scenarios[0].CPUPerRequest.Ours; got != 1000 {
		t.Errorf("CPU per request %v µs, want 1000 (kafka 0.8 + command-svc 0.2 cores over 1000/s)", got)
	}
}
