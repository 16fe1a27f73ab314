package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Request is one HTTP request of a scenario. Base is the scheme, host and
// port; a run against a ceiling replaces it (see Load.Base).
type Request struct {
	Base   string
	Method string
	Path   string // with the query string
	Body   []byte
	Header http.Header // shared between requests: never modified
	// Want is the status that counts as success.
	Want int
}

// Source makes the seq-th request of a run. It is called from many
// goroutines at once.
type Source func(seq uint64) Request

// Load is what a run sends and where.
type Load struct {
	Client *http.Client
	Source Source
	// Base, when not empty, replaces every request's Base: the same
	// requests go to a ceiling instead.
	Base string
}

// Histogram bounds: 1 µs to 2 minutes, three significant digits (a value
// is within 0.1% of what was recorded), as HdrHistogram recommends.
const (
	histLowest  = 1
	histHighest = int64(2 * time.Minute / time.Microsecond)
	histDigits  = 3
)

// Latency is a latency distribution, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

// LatencyOf summarises a histogram of microseconds.
func LatencyOf(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1000,
		P50:   ms(h.ValueAtPercentile(50)),
		P90:   ms(h.ValueAtPercentile(90)),
		P99:   ms(h.ValueAtPercentile(99)),
		P999:  ms(h.ValueAtPercentile(99.9)),
		Max:   ms(h.Max()),
	}
}

// Result is the outcome of one run.
type Result struct {
	// Mode is "closed" (Concurrency workers, each sending its next request
	// when the last one is answered) or "open" (requests scheduled at Rate
	// per second, latency measured from the intended send time).
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency,omitempty"`
	Rate        float64 `json:"rate_per_s,omitempty"`
	// Seconds is the measured window (after the warm-up).
	Seconds float64 `json:"seconds"`
	// Sent requests in the window; OK answered with the wanted status;
	// Errors did not (a transport error or another status).
	Sent   int64 `json:"sent"`
	OK     int64 `json:"ok"`
	Errors int64 `json:"errors"`
	// Throughput is OK per second of the window.
	Throughput float64 `json:"throughput_per_s"`
	// Forwarded answers carried X-Profiles-Hops: 1 (served by another
	// instance than the one the request was sent to).
	Forwarded int64         `json:"forwarded"`
	Statuses  map[int]int64 `json:"statuses"`
	// FirstError describes the first failed request.
	FirstError string `json:"first_error,omitempty"`
	// Latency of the successful requests.
	Latency Latency `json:"latency"`
	// Lagged counts open-loop requests sent more than 1 ms after their
	// intended time (the generator or its in-flight limit fell behind);
	// their latency still counts from the intended time.
	Lagged int64 `json:"lagged,omitempty"`
	hist   *hdrhistogram.Histogram
}

// Hist returns the latency histogram of the successful requests (µs).
func (r *Result) Hist() *hdrhistogram.Histogram { return r.hist }

// recorder collects the outcome of the requests of one run.
type recorder struct {
	mu       sync.Mutex
	hist     *hdrhistogram.Histogram
	statuses map[int]int64
	first    string
	sent     atomic.Int64
	ok       atomic.Int64
	errs     atomic.Int64
	fwd      atomic.Int64
	lagged   atomic.Int64
}

func newRecorder() *recorder {
	return &recorder{hist: hdrhistogram.New(histLowest, histHighest, histDigits), statuses: map[int]int64{}}
}

func (rc *recorder) record(status int, ok bool, forwarded bool, latency time.Duration, err error) {
	rc.sent.Add(1)
	if forwarded {
		rc.fwd.Add(1)
	}
	us := max(latency.Microseconds(), histLowest)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.statuses[status]++
	if ok {
		rc.ok.Add(1)
		_ = rc.hist.RecordValue(min(us, histHighest))
		return
	}
	rc.errs.Add(1)
	if rc.first == "" {
		if err != nil {
			rc.first = err.Error()
		} else {
			rc.first = fmt.Sprintf("status %d", status)
		}
	}
}

func (rc *recorder) result(mode string, window time.Duration) Result {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	r := Result{
		Mode: mode, Seconds: window.Seconds(),
		Sent: rc.sent.Load(), OK: rc.ok.Load(), Errors: rc.errs.Load(), Forwarded: rc.fwd.Load(),
		Statuses: rc.statuses, FirstError: rc.first, Lagged: rc.lagged.Load(),
		Latency: LatencyOf(rc.hist), hist: rc.hist,
	}
	if window > 0 {
		r.Throughput = float64(r.OK) / window.Seconds()
	}
	return r
}

// do sends one request and reports its status, whether it succeeded and
// whether it was forwarded.
func (l Load) do(ctx context.Context, seq uint64) (status int, ok, forwarded bool, err error) {
	q := l.Source(seq)
	base := q.Base
	if l.Base != "" {
		base = l.Base
	}
	var body io.Reader
	if q.Body != nil {
		body = bytes.NewReader(q.Body)
	}
	req, err := http.NewRequestWithContext(ctx, q.Method, base+q.Path, body)
	if err != nil {
		return 0, false, false, err
	}
	for k, v := range q.Header {
		req.Header[k] = v
	}
	resp, err := l.Client.Do(req)
	if err != nil {
		return 0, false, false, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.StatusCode == q.Want, resp.Header.Get("X-Profiles-Hops") == "1", nil
}

// ClosedLoop runs concurrency workers, each sending its next request as
// soon as the previous one is answered, for warmup (not recorded) and then
// for d. It measures the maximum throughput at that concurrency.
//
// A run in which no measured request has been answered by the end of d
// (every request slower than d: the sub-second runs of the tiny size on a
// loaded machine) goes on until one is, for at most maxExtension more, and
// its throughput is taken over the longer window.
func (l Load) ClosedLoop(ctx context.Context, concurrency int, warmup, d time.Duration) Result {
	const maxExtension = 30 * time.Second
	rc := newRecorder()
	var seq atomic.Uint64
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(d)
	var stoppedAt atomic.Int64 // when sending stopped (UnixNano); 0 while it goes on
	stop := func(now time.Time) bool {
		if stoppedAt.Load() != 0 {
			return true
		}
		if now.Before(end) || (rc.ok.Load()+rc.errs.Load() == 0 && now.Before(end.Add(maxExtension))) {
			return false
		}
		stoppedAt.CompareAndSwap(0, now.UnixNano())
		return true
	}
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				sent := time.Now()
				if stop(sent) {
					return
				}
				status, ok, fwd, err := l.do(ctx, seq.Add(1))
				if sent.Before(measureFrom) {
					continue
				}
				rc.record(status, ok, fwd, time.Since(sent), err)
			}
		}()
	}
	wg.Wait()
	window := d
	if at := stoppedAt.Load(); at != 0 {
		window = max(d, time.Unix(0, at).Sub(measureFrom))
	}
	r := rc.result("closed", window)
	r.Concurrency = concurrency
	return r
}

// OpenLoop schedules requests at rate per second, whatever the answers do,
// for warmup (not recorded) and then for d. The latency of each request is
// measured from its intended send time, so a stall counts for every
// request it delays (no coordinated omission). At most maxInFlight
// requests are outstanding; beyond that the schedule waits, and the wait
// counts in the latency of the requests it delays.
func (l Load) OpenLoop(ctx context.Context, rate float64, maxInFlight int, warmup, d time.Duration) Result {
	rc := newRecorder()
	interval := time.Duration(float64(time.Second) / rate)
	if interval <= 0 {
		interval = time.Nanosecond
	}
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(d)
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	var seq uint64
	for i := int64(0); ctx.Err() == nil; i++ {
		intended := start.Add(time.Duration(i) * interval)
		if !intended.Before(end) {
			break
		}
		if wait := time.Until(intended); wait > 0 {
			time.Sleep(wait)
		}
		sem <- struct{}{}
		seq++
		record := !intended.Before(measureFrom)
		if record && time.Since(intended) > time.Millisecond {
			rc.lagged.Add(1)
		}
		wg.Add(1)
		go func(s uint64) {
			defer wg.Done()
			defer func() { <-sem }()
			status, ok, fwd, err := l.do(ctx, s)
			if record {
				rc.record(status, ok, fwd, time.Since(intended), err)
			}
		}(seq)
	}
	wg.Wait()
	r := rc.result("open", d)
	r.Rate = rate
	return r
}

// NewClient returns the HTTP client of the load generator: at most
// maxConns keep-alive connections to each host, all kept open when idle,
// no compression. An open-loop request that finds every connection busy
// waits for one, and the wait counts in its latency. (Unbounded, a burst
// opens new connections that are closed again right after: the churn of
// handshakes and TIME_WAIT sockets then dominates on a small machine.)
func NewClient(maxConns int) *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        maxConns * 8,
			MaxConnsPerHost:     maxConns,
			MaxIdleConnsPerHost: maxConns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}
