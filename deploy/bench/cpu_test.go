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
	// Threads that ended before the first read (this test binary runs
	// other tests first) took their time with them, so the test compares
	// what the threads and the process used over the same spin, on a
	// thread that lives through it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid := os.Getpid()
	all := func(string) bool { return true }
	read := func() (whole, threads float64) {
		var err1, err2 error
		whole, err1 = CPUSeconds(pid)
		threads, err2 = ThreadCPUSeconds(pid, all)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		return whole, threads
	}
	w0, a0 := read()
	spin(300 * time.Millisecond)
	w1, a1 := read()
	dw, da := w1-w0, a1-a0
	// Give or take the clock ticks of the moments between the reads.
	if da <= 0 || da > dw+0.05 || da < dw-0.05 {
		t.Errorf("over the spin the threads used %.2f s and the process %.2f s: they should agree", da, dw)
	}
	none, err := ThreadCPUSeconds(pid, func(string) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if none != 0 {
		t.Errorf("no thread matched, yet %.2f s", none)
	}
	if _, err := ThreadCPUSeconds(1<<30, JITThread); err == nil {
		t.Error("a process that does not exist has no threads to read")
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
