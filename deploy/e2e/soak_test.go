package e2e

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"profiles/deploy/bench"
	"profiles/deploy/internal/chart"
	"profiles/deploy/internal/lincheck"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
)

// The soak (make soak; not part of make test): the fault suite's system
// and load for SOAK_DURATION (30m by default), with a fault injected at
// random in most minutes, and a sample every minute: latency percentiles,
// the RSS, open files and CPU of every process (and the brokers' JIT
// compiler threads' CPU), writes acknowledged and failed,
// and acknowledged writes missing from the event log (lost, must stay 0).
// At the end every acknowledged write is checked as in the fault suite,
// the whole history for linearizability, and the report (a markdown table
// per minute) and a chart are written to SOAK_OUT.md and SOAK_OUT.png
// (docs/soak by default).

// soakMinute is one minute's sample.
type soakMinute struct {
	at                  time.Duration
	faults              []string
	acked, failedWrites int
	reads, failedReads  int
	writeP50, writeP99  float64 // ms
	writeP999, readP50  float64
	readP99             float64
	lost                int                      // acknowledged so far and missing from the event log
	rss                 map[string]float64       // MiB by process
	rssFile             map[string]float64       // MiB by process: the part of rss mapped from files (the binary's pages)
	files               map[string]float64       // open files by process
	mem                 map[string]serviceMemory // by service process: what its /metrics says of its memory
	pids                map[string]int           // by process, at the sample: a new one was restarted
	// cpu is the cores each process used during the minute, and jit the
	// part of a broker's that its JIT compiler threads used (a restarted
	// JVM compiles its hot paths again). A process started within the
	// minute has neither.
	cpu, jit             map[string]float64
	ops, illegalProfiles int // filled in at the end
}

func TestSoak(t *testing.T) {
	if os.Getenv("PROFILES_SOAK") != "1" {
		t.Skip("SKIPPED: the soak runs with `make soak` (PROFILES_SOAK=1)")
	}
	duration := 30 * time.Minute
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute {
			t.Fatalf("SOAK_DURATION=%q: want a duration of a minute or more", v)
		}
		duration = d
	}
	out := os.Getenv("SOAK_OUT")
	if out == "" {
		out = filepath.Join(repoRoot, "docs", "soak")
	}
	c := needCluster(t)
	canCut := netCutAvailable()
	// Every service serves pprof on a port of its own (logged): the soak
	// saves their heap profiles (see soak_heap_test.go).
	t.Setenv("PPROF_ADDR", "127.0.0.1:0")
	heapDir := t.TempDir()
	s := startFaultSystem(t)
	preload := soakProfiles(t)
	preloadSoak(t, s, preload)
	warmSoak(t, s, preload)
	kc := KafkaAt(t, s.Brokers, true)
	ledger := newEventLedger(t, kc, s.env["EVENTS_TOPIC"])
	l := newFaultLoad(t, s)
	l.samples = &latencyLog{}
	l.Start(6, 2)
	start := l.start
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))

	// killOne SIGKILLs one instance of service, chosen at random, and
	// starts it again 3 s later.
	killOne := func(service string) {
		name := fmt.Sprintf("%s-%d", service, rng.IntN(2))
		l.Mark("soak: SIGKILL " + name)
		s.Kill(name)
		time.Sleep(3 * time.Second)
		s.Start(name)
		s.WaitReady(name)
	}
	faults := []struct {
		name string
		run  func()
	}{
		// A broker that was down or fenced gets its leaderships back in
		// the same minute (rebalanced), as an operator's
		// kafka-leader-election after a restart would do, rather than
		// at the controller's next check, up to 5 min later in a minute
		// that the soak counts as quiet.
		{"broker killed 10 s, leaders moved back", func() {
			n := 1 + rng.IntN(3)
			l.Mark(fmt.Sprintf("soak: SIGKILL broker %d", n))
			c.Kill(n)
			time.Sleep(10 * time.Second)
			c.Start(n)
			l.Mark(fmt.Sprintf("soak: %d leaderships moved back", c.Rebalance()))
		}},
		{"broker frozen 8 s, leaders moved back", func() {
			n := 1 + rng.IntN(3)
			l.Mark(fmt.Sprintf("soak: SIGSTOP broker %d", n))
			c.Signal(n, syscall.SIGSTOP)
			time.Sleep(8 * time.Second)
			c.Signal(n, syscall.SIGCONT)
			l.Mark(fmt.Sprintf("soak: %d leaderships moved back", c.Rebalance()))
		}},
		{"command-svc instance killed", func() { killOne("command-svc") }},
		{"query-svc instance killed", func() { killOne("query-svc") }},
		{"projector killed", func() {
			l.Mark("soak: SIGKILL projector-0")
			s.Kill("projector-0")
			time.Sleep(3 * time.Second)
			s.Start("projector-0")
			s.WaitReady("projector-0")
		}},
	}
	if canCut {
		faults = append(faults, struct {
			name string
			run  func()
		}{"instance cut off from the brokers 8 s", func() {
			name := []string{"command-svc-0", "query-svc-0", "command-svc-1", "query-svc-1"}[rng.IntN(4)]
			l.Mark("soak: cut " + name + " off from the brokers")
			heal := s.Cut(name, portsOf(t, s.Brokers)...)
			time.Sleep(8 * time.Second)
			heal()
		}})
	} else {
		t.Log("soak: no network partitions (they need root and nft)")
	}

	var minutes []soakMinute
	cpu := cpuSampler{}
	pids := func() map[string]int {
		m := map[string]int{}
		for name, p := range s.procs {
			m[name] = p.cmd.Process.Pid
		}
		for n := 1; n <= 3; n++ {
			if pid := c.pid(n); pid != 0 {
				m[fmt.Sprintf("broker-%d", n)] = pid
			}
		}
		return m
	}
	// The memory table (memoryGrowth) starts at minute 5, or at the first
	// in a soak of 5 minutes or less; the heap profiles are saved then and
	// at the end.
	heapFrom := soakFrom(int(duration / time.Minute))
	var heapFirst heapSnapshot
	cpu.sample(pids()) // minute 0's CPU is counted from here
	for i := 0; time.Since(start) < duration; i++ {
		end := start.Add(time.Duration(i+1) * time.Minute)
		var did []string
		if !soakFaultFree(i, int(duration/time.Minute)) && rng.Float64() < 0.7 {
			time.Sleep(time.Duration(rng.IntN(15)) * time.Second)
			f := faults[rng.IntN(len(faults))]
			f.run()
			did = append(did, f.name)
			if !l.WaitWrites(5, 90*time.Second) {
				t.Errorf("minute %d: writes did not resume within 90 s after %s", i, f.name)
			}
			l.Mark("soak: writes resumed after " + f.name)
		}
		time.Sleep(time.Until(end))
		m := soakMinute{at: time.Since(start), faults: did, rss: map[string]float64{}, rssFile: map[string]float64{}, files: map[string]float64{},
			mem: map[string]serviceMemory{}}
		for name, pid := range pids() {
			m.rss[name], m.rssFile[name], m.files[name] = procUsage(pid)
		}
		for name := range s.procs {
			m.mem[name] = memoryOf(s.URLOf(name))
		}
		m.lost = ledger.lostSoFar(t, l, kc)
		m.pids = pids()
		m.cpu, m.jit = cpu.sample(m.pids)
		if i == heapFrom {
			heapFirst = saveHeaps(s, heapDir, i, m.pids)
		}
		minutes = append(minutes, m)
		t.Logf("soak minute %d: %d processes sampled, %d acknowledged writes lost so far", i, len(m.rss), m.lost)
	}
	heapLast := saveHeaps(s, heapDir, len(minutes)-1, pids())
	l.Stop()
	fillLatencies(l, start, minutes)
	row := l.Verify("soak", "")
	dropReliability("soak")
	perMinuteLinearizability(l, start, minutes)
	if err := writeSoakReport(out, duration, preload, row, minutes, canCut, heapGrowth(heapFirst, heapLast)); err != nil {
		t.Fatal(err)
	}
	t.Logf("soak report: %s.md, %s.png", out, out)
}

// soakProfiles is the number of profiles in the event log before the
// load starts: SOAK_PROFILES, 200,000 by default (make bench's default
// size), 0 for a soak that starts empty.
func soakProfiles(t *testing.T) int {
	v := os.Getenv("SOAK_PROFILES")
	if v == "" {
		return 200_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("SOAK_PROFILES=%q: want a number of profiles, 0 or more", v)
	}
	return n
}

// preloadSoak writes n ProfileCreated events, sealed under the system's
// PII_KEK as command-svc seals them, straight into the event log (the
// bench's seeder), and waits until the front door serves the last of
// them from every partition.
//
// A service's memory is bounded by configuration, not by the data: Pebble's
// block caches (VIEW_CACHE_MB and the others) and memtables, and at most
// 8,192 opened data keys. Started empty, a soak's data stays smaller than
// those bounds for most of its run, so RSS grows while the caches fill,
// which says nothing about leaks. Started from a data set larger than the
// caches, as a production service is, the caches are full before the
// minute from which the soak's aims are measured (soakFrom), and any
// growth after it is a finding.
func preloadSoak(t *testing.T, s *System, n int) {
	t.Helper()
	if n == 0 {
		t.Log("soak: no preload (SOAK_PROFILES=0): the caches fill during the run")
		return
	}
	kek, err := pii.ParseKEK(s.env["PII_KEK"])
	if err != nil {
		t.Fatal(err)
	}
	kc := KafkaAt(t, s.Brokers, false)
	parts := PartitionsOf(t, kc, s.env["EVENTS_TOPIC"])
	kcfg := topology.Config{
		Config:      kafkax.Config{Brokers: strings.Split(s.Brokers, ",")},
		EventsTopic: s.env["EVENTS_TOPIC"], KeysTopic: s.env["KEYS_TOPIC"], Partitions: int32(len(parts)),
	}
	seeded, err := bench.Seed(t.Context(), kcfg, kek, n)
	if err != nil {
		t.Fatalf("soak: preloading %d profiles: %v", n, err)
	}
	t.Logf("soak: preloaded %d profiles into the event log in %.1f s (%.0f events/s)", n, seeded.Seconds, seeded.Rate)

	// The last profiles written land in every partition; once the front
	// door serves each of them, every view and state store has folded the
	// preload.
	last := make([]string, 0, 64)
	for i := n - 1; i >= 0 && len(last) < cap(last); i-- {
		last = append(last, bench.UID(i))
	}
	start, progress := time.Now(), time.Now()
	for len(last) > 0 {
		resp, err := s.HTTP.Get(s.URL + "/api/profile/" + last[0])
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				last = last[1:]
				continue
			}
		}
		if time.Since(start) > 15*time.Minute {
			t.Fatalf("soak: the preload of %d profiles is not served after %s (%d of the last 64 missing)", n, time.Since(start).Round(time.Second), len(last))
		}
		if time.Since(progress) > 10*time.Second {
			t.Logf("soak: waiting for the views to fold the preload (%s, %d of the last 64 not served yet)", time.Since(start).Round(time.Second), len(last))
			progress = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("soak: the preload is served, %s after it was written", time.Since(start).Round(100*time.Millisecond))
}

// soakWarmWrites is how many preloaded profiles warmSoak changes: more
// than twice the 8,192 data keys a keyring keeps opened, so that every
// keyring of the fault system fills, command-svc's too, each of whose two
// instances owns about half the profiles.
const soakWarmWrites = 24_000

// warmSoak runs, through the front door, the reads and writes that fill
// the services' bounded caches before the load starts: a GET of each of
// the n preloaded profiles (query-svc's block caches), and a PUT that
// renames soakWarmWrites of them (command-svc's and the projector's state
// caches, and every keyring's opened keys: a change seals its new fields
// with the profile's data key, and each fold of it opens that key). The
// preload alone does not fill them: folding a profile writes the stores
// without reading their blocks, and opens no key of a profile that is
// not changed. It fails the soak if more than 1% of either fails, since
// the caches would then not be full when the aims start.
func warmSoak(t *testing.T, s *System, n int) {
	t.Helper()
	if n == 0 {
		return
	}
	run := func(what string, total, workers int, do func(i int) (int, error), want int) {
		start := time.Now()
		var done, failed atomic.Int64
		var first sync.Once
		var firstErr string
		var wg sync.WaitGroup
		next := atomic.Int64{}
		for range workers {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < total; i = int(next.Add(1)) - 1 {
					status, err := do(i)
					if err != nil || status != want {
						failed.Add(1)
						first.Do(func() { firstErr = fmt.Sprintf("profile %d: status %d, %v", i, status, err) })
					}
					done.Add(1)
				}
			})
		}
		stop := make(chan struct{})
		go func() {
			tick := time.NewTicker(10 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					t.Logf("soak: warm-up %s: %d of %d, %d failed (%s)", what, done.Load(), total, failed.Load(), time.Since(start).Round(time.Second))
				}
			}
		}()
		wg.Wait()
		close(stop)
		took := time.Since(start)
		t.Logf("soak: warm-up %s: %d in %.1f s (%.0f/s), %d failed", what, total, took.Seconds(), float64(total)/took.Seconds(), failed.Load())
		if failed.Load()*100 > int64(total) {
			t.Fatalf("soak: warm-up %s: %d of %d failed (the first: %s)", what, failed.Load(), total, firstErr)
		}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	call := func(req *http.Request, err error) (int, error) {
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	run("reads", n, 16, func(i int) (int, error) {
		return call(http.NewRequest(http.MethodGet, s.URL+"/api/profile/"+bench.UID(i), nil))
	}, http.StatusOK)
	writes := min(n, soakWarmWrites)
	run("writes", writes, 32, func(i int) (int, error) {
		k := i * (n / writes) // spread over the preload
		body := fmt.Sprintf(`{"username":"warm-%d","email":%q}`, k, bench.Email(k))
		req, err := http.NewRequest(http.MethodPut, s.URL+"/api/profile/"+bench.UID(k), strings.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return call(req, err)
	}, http.StatusOK)
}

// soakStart describes the state the soak started from, for its report.
func soakStart(preload, from int, kafkaHeap string) string {
	var b strings.Builder
	if preload > 0 {
		fmt.Fprintf(&b, "The soak started from %d profiles already in the event log (`SOAK_PROFILES`), written by the bench's seeder and folded by every service before the load began. A warm-up then read each of them once and renamed %d of them, through the front door, so that the services' bounded caches (Pebble's block caches, the opened data keys) fill before minute %d, from which the aims are measured, as in a service that holds data; the memory table below shows the block caches then.", preload, min(preload, soakWarmWrites), from)
	} else {
		b.WriteString("The soak started from an empty event log (`SOAK_PROFILES=0`): the services' caches fill during the run.")
	}
	if kafkaHeap != "" {
		fmt.Fprintf(&b, " The brokers ran with `KAFKA_HEAP_OPTS=%s`.", kafkaHeap)
	}
	return b.String()
}

// netCutAvailable reports whether network partitions can be made here.
func netCutAvailable() bool {
	if os.Getuid() != 0 {
		return false
	}
	return exec.Command("nft", "list", "tables").Run() == nil
}

// dropReliability removes a scenario's row: the soak is not a row of
// docs/reliability.md.
func dropReliability(scenario string) {
	reliability.Lock()
	defer reliability.Unlock()
	rows := reliability.rows[:0]
	for _, r := range reliability.rows {
		if r.Scenario != scenario {
			rows = append(rows, r)
		}
	}
	reliability.rows = rows
}

// procUsage returns a process's resident memory (MiB), the part of it
// mapped from files (RssFile: the executable's pages that have run, which
// the kernel may drop and read again), and its open files.
func procUsage(pid int) (rssMiB, fileMiB, files float64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			kb, _ := strconv.ParseFloat(f[1], 64)
			switch f[0] {
			case "VmRSS:":
				rssMiB = kb / 1024
			case "RssFile:":
				fileMiB = kb / 1024
			}
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		files = float64(len(ents))
	}
	return rssMiB, fileMiB, files
}

// serviceMemory is what a service's /metrics says of its memory, in MiB.
type serviceMemory struct {
	heap      float64 // the Go heap in use
	cache     float64 // the block caches of its Pebble stores
	memtables float64 // its Pebble stores' memtables, zombies included
	kept      float64 // free heap the runtime keeps without returning it to the OS (idle minus released: resident, in no span in use)
}

// memoryOf returns what a service's /metrics at base says of its memory;
// all zero when the service does not answer (it may be down at this
// minute's sample).
func memoryOf(base string) serviceMemory {
	var m serviceMemory
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	var idle, released float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		var sum *float64
		switch {
		case strings.HasPrefix(line, "go_memstats_heap_inuse_bytes "):
			sum = &m.heap
		case strings.HasPrefix(line, "go_memstats_heap_idle_bytes "):
			sum = &idle
		case strings.HasPrefix(line, "go_memstats_heap_released_bytes "):
			sum = &released
		case strings.HasPrefix(line, "profiles_pebble_block_cache_bytes{"):
			sum = &m.cache
		case strings.HasPrefix(line, "profiles_pebble_memtable_bytes{"), strings.HasPrefix(line, "profiles_pebble_memtable_zombie_bytes{"):
			sum = &m.memtables
		default:
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			*sum += v / (1 << 20)
		}
	}
	m.kept = idle - released
	return m
}

// soakFrom is the minute the memory table and the aims start from: the
// 5th, or the first in a soak of 5 minutes or less.
func soakFrom(minutes int) int {
	if minutes <= 5 {
		return 0
	}
	return 5
}

// memoryGrowth says, for each service process, how its RSS moved from
// soakFrom to the last minute, and how much of that the executable's
// pages, the Go heap in use and the free heap the runtime keeps account
// for, and how much of the heap's growth the Pebble block caches do. The
// binaries are built without cgo, so Pebble's block caches and memtables
// live in the Go heap: a block cache fills up to its configured size as
// the data grows, which is not a leak.
func memoryGrowth(names []string, minutes []soakMinute) string {
	from := soakFrom(len(minutes))
	first, last := minutes[from], minutes[len(minutes)-1]
	var b strings.Builder
	fmt.Fprintf(&b, "\nMemory of the services from minute %d to minute %d (MiB). Built without cgo, Pebble's block caches and memtables are in the Go heap. RSS is the sum of the executable's pages mapped from its file, the Go heap in use, the free heap the runtime keeps, and the rest (goroutine stacks, the runtime's own structures).\n\n", from, len(minutes)-1)
	b.WriteString("| process | RSS | of it, from the executable's file | Go heap in use | of it, block caches | of it, memtables | free heap kept | RSS growth outside these | heap growth outside the caches and memtables |\n|---|---|---|---|---|---|---|---:|---:|\n")
	for _, n := range names {
		z, ok := last.mem[n]
		if !ok {
			continue
		}
		a := first.mem[n]
		dFile, dHeap, dKept := last.rssFile[n]-first.rssFile[n], z.heap-a.heap, z.kept-a.kept
		dPebble := z.cache - a.cache + z.memtables - a.memtables
		fmt.Fprintf(&b, "| %s | %.0f → %.0f | %.0f → %.0f | %.0f → %.0f | %.0f → %.0f | %.0f → %.0f | %.0f → %.0f | %.0f | %.0f |\n", n,
			first.rss[n], last.rss[n], first.rssFile[n], last.rssFile[n], a.heap, z.heap, a.cache, z.cache,
			a.memtables, z.memtables, a.kept, z.kept, last.rss[n]-first.rss[n]-dFile-dHeap-dKept, dHeap-dPebble)
	}
	return b.String()
}

// soakFaultFree reports whether minute i of a soak of n minutes is kept
// free of faults: minute 0 (the baseline), soakFrom and the minute before
// it, and the last two. soakAims compares latency between quiet minutes
// (no fault in it or in the one before); with a fault in about 70% of the
// other minutes, two quiet minutes are otherwise rare, and one at each end
// of the measured span is what the aim needs.
func soakFaultFree(i, n int) bool {
	from := soakFrom(n)
	return i == 0 || (from > 0 && (i == from-1 || i == from)) || i >= n-2
}

// soakAims measures the run against issue 20's aims: RSS flat within 10%
// and p99 flat within 20% from soakFrom to the end. RSS is compared for
// the processes that ran all that time (a restarted one starts small
// again); p99 between the first and the last quiet minute (no fault in
// it or in the minute before, whose fault may spill over).
func soakAims(names []string, minutes []soakMinute) string {
	from := soakFrom(len(minutes))
	first, last := minutes[from], minutes[len(minutes)-1]
	var b strings.Builder
	fmt.Fprintf(&b, "\nAgainst the aims (from minute %d to minute %d):\n\n| figure | from | to | change | aim | met |\n|---|---:|---:|---:|---|:---:|\n", from, len(minutes)-1)
	met := map[bool]string{true: "yes", false: "no"}
	for _, n := range names {
		if first.pids[n] == 0 || first.pids[n] != last.pids[n] {
			fmt.Fprintf(&b, "| RSS of %s | %.0f MiB | %.0f MiB | – | within 10%% | restarted in between |\n", n, first.rss[n], last.rss[n])
			continue
		}
		change := last.rss[n]/first.rss[n] - 1
		fmt.Fprintf(&b, "| RSS of %s | %.0f MiB | %.0f MiB | %+.0f%% | within 10%% | %s |\n", n, first.rss[n], last.rss[n], 100*change, met[math.Abs(change) <= 0.10])
	}
	quiet := func(i int) bool { return len(minutes[i].faults) == 0 && (i == 0 || len(minutes[i-1].faults) == 0) }
	q0, q1 := -1, -1
	for i := from; i < len(minutes); i++ {
		if quiet(i) {
			if q0 < 0 {
				q0 = i
			}
			q1 = i
		}
	}
	for _, p := range []struct {
		name string
		get  func(soakMinute) float64
	}{{"write p99", func(m soakMinute) float64 { return m.writeP99 }}, {"read p99", func(m soakMinute) float64 { return m.readP99 }}} {
		if q0 < 0 || q0 == q1 {
			fmt.Fprintf(&b, "| %s in quiet minutes | – | – | – | within 20%% | fewer than two quiet minutes |\n", p.name)
			continue
		}
		a, z := p.get(minutes[q0]), p.get(minutes[q1])
		change := z/a - 1
		fmt.Fprintf(&b, "| %s in quiet minutes (%d → %d) | %.0f ms | %.0f ms | %+.0f%% | within 20%% | %s |\n", p.name, q0, q1, a, z, 100*change, met[math.Abs(change) <= 0.20])
	}
	return b.String()
}

// eventLedger is the (uid, version) of every event appended to the event
// log since it was made, read a tail at a time: the soak checks every
// minute that no acknowledged write is missing, and reading the whole log
// each time (a million preloaded profiles) would load the machine it
// measures.
type eventLedger struct {
	topic  string
	next   map[int32]int64
	logged map[ackedWrite]bool
}

// newEventLedger starts a ledger at the end of the event log: make it
// before the load whose writes it is to find.
func newEventLedger(t *testing.T, kc sarama.Client, topic string) *eventLedger {
	parts := PartitionsOf(t, kc, topic)
	from := make(map[int32]int64, len(parts))
	for _, p := range parts {
		from[p] = sarama.OffsetNewest
	}
	_, next := ReadTopicFrom(t, kc, topic, from)
	return &eventLedger{topic: topic, next: next, logged: map[ackedWrite]bool{}}
}

// lostSoFar reads the event log's new records (read committed) and returns
// how many of the writes acknowledged before the read began are missing
// from it. A write acknowledged during the read may be in a partition
// already read, so it is counted at the next call.
func (e *eventLedger) lostSoFar(t *testing.T, l *faultLoad, kc sarama.Client) int {
	l.mu.Lock()
	acked := append([]ackedWrite(nil), l.acked...)
	l.mu.Unlock()
	msgs, next := ReadTopicFrom(t, kc, e.topic, e.next)
	e.next = next
	for _, m := range msgs {
		ev, err := codecOfTests.DecodeEvent(m.Value)
		if err != nil {
			t.Errorf("undecodable event at %d/%d: %v", m.Partition, m.Offset, err)
			continue
		}
		e.logged[ackedWrite{uid: ev.UID, version: ev.Version}] = true
	}
	lost := 0
	for _, w := range acked {
		if !e.logged[w] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d acknowledged writes are missing from the event log", lost)
	}
	return lost
}

// fillLatencies computes each minute's counts and percentiles.
func fillLatencies(l *faultLoad, start time.Time, minutes []soakMinute) {
	byMin := make([]struct{ w, r []time.Duration }, len(minutes))
	l.samples.mu.Lock()
	for _, sm := range l.samples.all {
		i := int(sm.end.Sub(start) / time.Minute)
		if i < 0 || i >= len(minutes) {
			continue
		}
		m := &minutes[i]
		if sm.write {
			byMin[i].w = append(byMin[i].w, sm.latency)
			if sm.ok {
				m.acked++
			} else {
				m.failedWrites++
			}
		} else {
			byMin[i].r = append(byMin[i].r, sm.latency)
			m.reads++
			if !sm.ok {
				m.failedReads++
			}
		}
	}
	l.samples.mu.Unlock()
	for i := range minutes {
		m := &minutes[i]
		m.writeP50, m.writeP99, m.writeP999 = pct(byMin[i].w, 0.5), pct(byMin[i].w, 0.99), pct(byMin[i].w, 0.999)
		m.readP50, m.readP99 = pct(byMin[i].r, 0.5), pct(byMin[i].r, 0.99)
	}
}

func pct(d []time.Duration, q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return float64(d[min(len(d)-1, int(q*float64(len(d))))]) / float64(time.Millisecond)
}

// perMinuteLinearizability attributes the whole history's verdict to the
// minutes: each minute's operations, and the profiles with an operation
// in that minute whose history is not linearizable.
func perMinuteLinearizability(l *faultLoad, start time.Time, minutes []soakMinute) {
	res, _ := l.history.Check(2*time.Minute, "")
	illegal := map[string]bool{}
	for _, uid := range append(res.Illegal, res.TimedOut...) {
		illegal[uid] = true
	}
	seen := make([]map[string]bool, len(minutes))
	for _, op := range l.history.Operations() {
		i := int(time.Duration(op.Call) / time.Minute)
		if i < 0 || i >= len(minutes) {
			continue
		}
		minutes[i].ops++
		uid := op.Input.(lincheck.Input).UID
		if illegal[uid] {
			if seen[i] == nil {
				seen[i] = map[string]bool{}
			}
			if !seen[i][uid] {
				seen[i][uid] = true
				minutes[i].illegalProfiles++
			}
		}
	}
}

func writeSoakReport(out string, duration time.Duration, preload int, row reliabilityRow, minutes []soakMinute, cuts bool, heap string) error {
	var names []string
	for name := range minutes[0].rss {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, `# Soak

Written by `+"`make soak`"+` (deploy/e2e/soak_test.go) on %s: %s of the fault suite's
system (two command-svc, two query-svc, one projector, the front door; 6
partitions) and load (six writers, two readers, through the front door) on
the three-node cluster, with a fault injected at random in about 70%% of the
minutes (a broker killed or frozen, then its leaderships moved back to it
as the controller's leader rebalance would later; a service instance or the projector
killed%s), except the first, the two at which the aims start and the last
two, kept quiet to compare latency. Every minute: the requests that ended in it and
their latency, the resident memory, open files and CPU of every process, and the
acknowledged writes missing from the event log so far. At the end every
acknowledged write is checked as in the fault suite, and the whole history
for linearizability; a minute's "non-linearizable" counts the profiles with
an operation in that minute whose history no order explains.

%s

**Overall:** %d writes acknowledged, %d lost; linearizable: %s (%d operations);
failed writes %d (%s); failed reads %d of %d (%s); longest time without an
acknowledged write %.1f s.

Processes: %s.

| minute | fault | writes ok | writes failed | reads (failed) | write p50 / p99 / p99.9 ms | read p50 / p99 ms | lost | ops (non-linearizable) | RSS MiB | open files | CPU cores | brokers' JIT cores |
|---:|---|---:|---:|---:|---|---|---:|---|---|---|---|---|
`, time.Now().UTC().Format("2006-01-02 15:04 MST"), duration, map[bool]string{true: ", an instance cut off from the brokers", false: ""}[cuts],
		soakStart(preload, soakFrom(int(duration/time.Minute)), os.Getenv("KAFKA_HEAP_OPTS")),
		row.Acked, row.Lost, row.Linearizable, row.Ops, row.FailedWrites, row.WriteErrors, row.FailedReads, row.Reads, row.ReadErrors, row.Window.Seconds(),
		strings.Join(names, ", "))
	for i, m := range minutes {
		var rss, files, cores, jit []string
		for _, n := range names {
			rss = append(rss, fmt.Sprintf("%.0f", m.rss[n]))
			files = append(files, fmt.Sprintf("%.0f", m.files[n]))
			cores = append(cores, orDash(m.cpu, n))
			if strings.HasPrefix(n, "broker-") {
				jit = append(jit, orDash(m.jit, n))
			}
		}
		fault := strings.Join(m.faults, ", ")
		if fault == "" {
			fault = "none"
		}
		fmt.Fprintf(&b, "| %d | %s | %d | %d | %d (%d) | %.0f / %.0f / %.0f | %.0f / %.0f | %d | %d (%d) | %s | %s | %s | %s |\n",
			i, fault, m.acked, m.failedWrites, m.reads, m.failedReads, m.writeP50, m.writeP99, m.writeP999, m.readP50, m.readP99,
			m.lost, m.ops, m.illegalProfiles, strings.Join(rss, " / "), strings.Join(files, " / "), strings.Join(cores, " / "), strings.Join(jit, " / "))
	}
	fmt.Fprintf(&b, "\nRSS, open files and CPU list the processes in the order above (CPU: the cores each used during the minute, – for one started within it; the brokers' JIT cores are the part of their CPU that the JVM's compiler threads used, which a restarted broker spends again). The chart: [%s.png](%s.png).\n", filepath.Base(out), filepath.Base(out))
	b.WriteString(soakAims(names, minutes))
	b.WriteString(memoryGrowth(names, minutes))
	b.WriteString(heap)
	if err := os.WriteFile(out+".md", []byte(b.String()), 0o644); err != nil {
		return err
	}
	series := func(f func(m soakMinute) float64) []float64 {
		ys := make([]float64, len(minutes))
		for i, m := range minutes {
			ys[i] = f(m)
		}
		return ys
	}
	perProcess := func(get func(m soakMinute) map[string]float64) []chart.Series {
		var ss []chart.Series
		for _, n := range names {
			ss = append(ss, chart.Series{Name: n, Y: series(func(m soakMinute) float64 { return get(m)[n] })})
		}
		return ss
	}
	perService := func() []chart.Series {
		var ss []chart.Series
		for _, n := range names {
			if _, ok := minutes[len(minutes)-1].mem[n]; ok {
				ss = append(ss, chart.Series{Name: n, Y: series(func(m soakMinute) float64 { return m.mem[n].heap })})
			}
		}
		return ss
	}
	panels := []chart.Panel{
		{Title: "latency, ms", Series: []chart.Series{
			{Name: "write p50", Y: series(func(m soakMinute) float64 { return m.writeP50 })},
			{Name: "write p99", Y: series(func(m soakMinute) float64 { return m.writeP99 })},
			{Name: "read p50", Y: series(func(m soakMinute) float64 { return m.readP50 })},
			{Name: "read p99", Y: series(func(m soakMinute) float64 { return m.readP99 })},
		}},
		{Title: "requests per minute", Series: []chart.Series{
			{Name: "writes ok", Y: series(func(m soakMinute) float64 { return float64(m.acked) })},
			{Name: "writes failed", Y: series(func(m soakMinute) float64 { return float64(m.failedWrites) })},
			{Name: "reads failed", Y: series(func(m soakMinute) float64 { return float64(m.failedReads) })},
		}},
		{Title: "acknowledged writes lost; non-linearizable profiles (both must be 0)", Series: []chart.Series{
			{Name: "lost", Y: series(func(m soakMinute) float64 { return float64(m.lost) })},
			{Name: "non-linearizable", Y: series(func(m soakMinute) float64 { return float64(m.illegalProfiles) })},
		}},
		{Title: "resident memory, MiB", Series: perProcess(func(m soakMinute) map[string]float64 { return m.rss })},
		{Title: "CPU, cores", Series: perProcess(func(m soakMinute) map[string]float64 { return m.cpu })},
		{Title: "services: Go heap in use (Pebble's block caches and memtables included), MiB", Series: perService()},
		{Title: "open files", Series: perProcess(func(m soakMinute) map[string]float64 { return m.files })},
	}
	f, err := os.Create(out + ".png")
	if err != nil {
		return err
	}
	defer f.Close()
	return chart.Draw(f, fmt.Sprintf("profiles soak, %s, %s", duration, time.Now().UTC().Format("2006-01-02")), "minute", len(minutes), panels)
}

// cpuSampler turns the CPU time of processes, read once a minute, into
// the cores each used since the last read. It is not safe for concurrent
// use.
type cpuSampler struct {
	last map[string]cpuRead
}

type cpuRead struct {
	pid      int
	cpu, jit float64 // seconds
	at       time.Time
}

// sample reads the CPU time of every process of pids and returns the cores
// each used since the previous sample, and for the brokers the cores of
// their JIT compiler threads. A process whose pid changed (restarted) or
// that was not sampled before has no figure yet.
func (c *cpuSampler) sample(pids map[string]int) (cores, jit map[string]float64) {
	now := time.Now()
	cores, jit = map[string]float64{}, map[string]float64{}
	next := map[string]cpuRead{}
	for name, pid := range pids {
		cs, err := bench.CPUSeconds(pid)
		if err != nil {
			continue
		}
		r := cpuRead{pid: pid, cpu: cs, at: now}
		broker := strings.HasPrefix(name, "broker-")
		if broker {
			r.jit, _ = bench.ThreadCPUSeconds(pid, bench.JITThread)
		}
		next[name] = r
		prev, ok := c.last[name]
		if !ok || prev.pid != pid {
			continue
		}
		if wall := now.Sub(prev.at).Seconds(); wall > 0 {
			cores[name] = (r.cpu - prev.cpu) / wall
			if broker {
				jit[name] = max(r.jit-prev.jit, 0) / wall
			}
		}
	}
	c.last = next
	return cores, jit
}

// orDash formats m[name] with two decimals, or – when it is missing.
func orDash(m map[string]float64, name string) string {
	if v, ok := m[name]; ok {
		return fmt.Sprintf("%.2f", v)
	}
	return "–"
}
