package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"profiles/platform/testenv"
)

// TestMain lets the bench start this test binary as its HTTP ceiling (see
// MaybeServeCeiling).
func TestMain(m *testing.M) {
	MaybeServeCeiling()
	os.Exit(m.Run())
}

// TestBenchHarnessRunsAtTinySize runs the whole bench once at its tiny size
// (2,000 profiles, sub-second runs) against the broker of make test, to
// prove that the harness works end to end. It asserts that every scenario
// and every reference produced a figure and that the report files were
// written, never a time: a benchmark is not a test.
func TestBenchHarnessRunsAtTinySize(t *testing.T) {
	brokers := testenv.Require(t, "PROFILES_TEST_KAFKA", "the test Kafka broker")
	_, file, _, _ := runtime.Caller(0)
	cfg, err := Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Repo = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	cfg.Brokers = brokers
	cfg.KafkaData = os.Getenv("PROFILES_TEST_KAFKA_DATA")
	cfg.DataDir, cfg.OutDir = t.TempDir(), t.TempDir()
	cfg.Prefix = fmt.Sprintf("bench-test-%06d", rand.IntN(1e6))
	cfg.Self = []string{os.Args[0], "-test.run=^$"}
	cfg.Log = testLog{t}

	// The binaries are built first, with a bound of their own: on a cold
	// build cache (a fresh machine) the four builds alone take minutes on
	// two cores. Run's build is then a cache hit, and the bench's own bound
	// is about the bench.
	bctx, bcancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer bcancel()
	if err := Build(bctx, cfg.Repo, filepath.Join(cfg.DataDir, "bin")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the tiny bench took %s", time.Since(start).Round(time.Millisecond))

	if len(rep.Scenarios) != 12 {
		t.Errorf("%d scenarios, want 12", len(rep.Scenarios))
	}
	for _, s := range rep.Scenarios {
		for run, r := range map[string]Result{"closed": s.Closed, "ceiling closed": s.CeilingClosed, "open": s.Open, "ceiling open": s.CeilingOpen} {
			if r.OK == 0 || r.Latency.Count == 0 || r.Throughput <= 0 {
				t.Errorf("%s, %s loop: no figure (%d ok, %d errors, first error %q)", s.Name, run, r.OK, r.Errors, r.FirstError)
			}
		}
	}
	switch {
	case rep.ProduceCeiling.Throughput <= 0:
		t.Error("no produce ceiling")
	case rep.ConsumeCeiling.FetchThroughput <= 0:
		t.Error("no consume ceiling")
	case rep.Consumers.Watermill <= 0 || rep.Consumers.Read <= 0:
		t.Errorf("consumers: %+v", rep.Consumers)
	case rep.Replay.Rate <= 0 || rep.Replay.Events != int64(cfg.Profiles):
		t.Errorf("replay: %+v", rep.Replay)
	case rep.WriteWarmup == nil || rep.WriteWarmup.OK == 0 || rep.WriteWarmup.Errors != 0:
		t.Errorf("write warm-up: %+v", rep.WriteWarmup)
	case rep.WriteToVisible == nil || rep.WriteToVisible.Latency.Count == 0 || rep.WriteToVisible.Produce.Records == 0:
		t.Errorf("write-to-visible: %+v", rep.WriteToVisible)
	case len(rep.RSS) != 6 || rep.CeilingRSSMB <= 0:
		t.Errorf("RSS: %+v, ceiling %v", rep.RSS, rep.CeilingRSSMB)
	}
	restarted := map[string]bool{}
	for _, r := range rep.Restarts {
		restarted[r.Proc] = r.ReadySeconds > 0
	}
	for _, p := range []string{"query-svc-1", "command-svc-1", "ceiling"} {
		if !restarted[p] {
			t.Errorf("no restart-to-ready figure for %s: %+v", p, rep.Restarts)
		}
	}
	if f := rep.Failover; f == nil || f.Reads == 0 {
		t.Errorf("no failover figure: %+v", f)
	}
	if len(rep.Aims) != 11 {
		t.Errorf("%d aims judged, want 11: %+v", len(rep.Aims), rep.Aims)
	}
	// With the broker's pid known (its CPU is counted), its request meters
	// were read during the write scenarios (too short here for a figure
	// per request; TestRequestsPerRequest checks the arithmetic).
	if _, ok := rep.Scenarios[len(rep.Scenarios)-1].CPU["closed"]["kafka"]; ok {
		b, err := os.ReadFile(filepath.Join(cfg.DataDir, "logs", "broker-requests.txt"))
		if err != nil || !strings.Contains(string(b), "time=") || !strings.Contains(string(b), "request=Produce") {
			t.Errorf("no samples of the broker's request meters (%v): %.500s", err, b)
		}
	}
	for _, f := range []string{"latest.json", "latest.md", "latency.png"} {
		st, err := os.Stat(filepath.Join(cfg.OutDir, f))
		if err != nil || st.Size() == 0 {
			t.Errorf("report file %s not written: %v", f, err)
		}
	}
	var back Report
	if raw, err := os.ReadFile(filepath.Join(cfg.OutDir, "latest.json")); err != nil || json.Unmarshal(raw, &back) != nil || len(back.Figures) == 0 {
		t.Errorf("latest.json does not hold the figures: %v", err)
	}
	if md, _ := os.ReadFile(filepath.Join(cfg.OutDir, "latest.md")); !strings.Contains(string(md), "| get-owner |") {
		t.Errorf("latest.md has no table:\n%s", md)
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The open loop measures from the intended send time: a stall of the
// server counts for every request scheduled during it, where a closed
// loop would see one request per worker (coordinated omission).
func TestOpenLoopCountsStallsFromTheIntendedSendTime(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	load := Load{Client: NewClient(64), Source: func(uint64) Request {
		return Request{Base: srv.URL, Method: http.MethodGet, Path: "/", Want: http.StatusOK}
	}}
	stall := 400 * time.Millisecond
	var once sync.Once
	go func() { time.Sleep(stall); once.Do(func() { close(release) }) }()
	open := load.OpenLoop(context.Background(), 100, 1000, 0, 200*time.Millisecond)
	if open.Sent < 15 {
		t.Fatalf("the open loop sent %d requests in 200ms at 100/s", open.Sent)
	}
	// The first request was due at once and answered after the stall.
	if got := time.Duration(open.Latency.Max * float64(time.Millisecond)); got < stall-10*time.Millisecond {
		t.Errorf("open loop max latency %s, want at least the stall %s", got, stall)
	}

	release2 := make(chan struct{})
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release2 }))
	defer srv2.Close()
	load.Source = func(uint64) Request {
		return Request{Base: srv2.URL, Method: http.MethodGet, Path: "/", Want: http.StatusOK}
	}
	go func() { time.Sleep(stall); close(release2) }()
	closed := load.ClosedLoop(context.Background(), 2, 0, 200*time.Millisecond)
	if closed.Sent != 2 {
		t.Errorf("the closed loop recorded %d requests during the stall, want one per worker (2)", closed.Sent)
	}
}

func TestCeilingAnswersLikeTheServices(t *testing.T) {
	srv := httptest.NewServer(CeilingHandler())
	defer srv.Close()
	for _, c := range []struct {
		method, path, prefer string
		want                 int
	}{
		{http.MethodGet, "/api/profile/" + UID(1), "", http.StatusOK},
		{http.MethodGet, "/api/search?email=" + Email(1), "", http.StatusOK},
		{http.MethodPost, "/api/profile", "", http.StatusCreated},
		{http.MethodPost, "/api/profile", "respond-async", http.StatusAccepted},
		{http.MethodPut, "/api/profile/" + UID(1), "", http.StatusOK},
		{http.MethodGet, "/readyz", "", http.StatusOK},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(`{"username":"u","email":"u@bench.example"}`))
		if c.prefer != "" {
			req.Header.Set("Prefer", c.prefer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s (Prefer %q): %d, want %d", c.method, c.path, c.prefer, resp.StatusCode, c.want)
		}
	}
}

func TestParseKafkaToolsAndReplay(t *testing.T) {
	pp, err := ParseProducePerf("2499 records sent, 498.7 records/sec (0.19 MB/sec), 9.3 ms avg latency, 90.0 ms max latency.\n" +
		"5000 records sent, 496.1 records/sec (0.19 MB/sec), 20.85 ms avg latency, 906.00 ms max latency, 8 ms 50th, 76 ms 95th, 153 ms 99th, 184 ms 99.9th.\n")
	if err != nil || pp.Records != 5000 || pp.Throughput != 496.1 || pp.P50Ms != 8 || pp.P99Ms != 153 || pp.P999Ms != 184 || pp.MaxMs != 906 {
		t.Errorf("ParseProducePerf = %+v, %v", pp, err)
	}
	cp, err := ParseConsumePerf("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n" +
		"2026-11-26 00:41:49:883, 2026-11-26 00:41:51:387, 76.2939, 50.7274, 200000, 132978.7234, 592, 912, 83.6556, 219298.2456\n")
	if err != nil || cp.Messages != 200000 || cp.FetchThroughput != 219298.2456 || cp.RebalanceMs != 592 {
		t.Errorf("ParseConsumePerf = %+v, %v", cp, err)
	}
	rr, err := ParseReplay(`{"level":"INFO"}` + "\nreplay: generation 2 built: 2000 events folded in 660ms (3029 events/s), 2000 profiles (0 deleted), 0 poison, 0 duplicates; 4000 records written in 1.265s\n")
	if err != nil || rr.Events != 2000 || rr.Rate != 3029 || rr.Records != 4000 || rr.ReadSeconds != 0.66 || rr.WriteSeconds != 1.265 {
		t.Errorf("ParseReplay = %+v, %v", rr, err)
	}
	if _, err := ParseProducePerf("garbage"); err == nil {
		t.Error("ParseProducePerf accepted garbage")
	}
}

func TestUpdateBenchMDKeepsTheHandWrittenPart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCH.md")
	if err := os.WriteFile(path, []byte("# Bench\n\nhand-written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{"first results", "second results"} {
		if err := UpdateBenchMD(path, section); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(path)
	s := string(got)
	if !strings.HasPrefix(s, "# Bench\n\nhand-written\n") || strings.Contains(s, "first results") || strings.Count(s, "second results") != 1 {
		t.Errorf("BENCH.md:\n%s", s)
	}
}
