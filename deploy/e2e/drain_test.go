package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// rollLoad is a steady load of reads and writes through the front door,
// each checked for the one status it must get. Any other status, or a
// request that gets no answer, is a failure.
type rollLoad struct {
	s      *System
	client *http.Client
	stop   atomic.Bool
	wg     sync.WaitGroup

	mu       sync.Mutex
	failures []string
	failed   int
	samples  []sample
	// firstFail and lastFail span the failed requests: from the start
	// of the first to the end of the last.
	firstFail, lastFail time.Time
}

type sample struct {
	at   time.Time
	took time.Duration
	op   string
}

// do sends one request and records it; want is the only acceptable status.
func (l *rollLoad) do(op, method, path string, body any, want int, into any) bool {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, l.s.URL+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := l.client.Do(req)
	took := time.Since(start)
	var b []byte
	if err == nil {
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.samples = append(l.samples, sample{at: start, took: took, op: op})
	if err != nil || resp.StatusCode != want {
		if l.firstFail.IsZero() || start.Before(l.firstFail) {
			l.firstFail = start
		}
		if end := start.Add(took); end.After(l.lastFail) {
			l.lastFail = end
		}
	}
	switch {
	case err != nil:
		l.failed++
		if len(l.failures) < 20 {
			l.failures = append(l.failures, fmt.Sprintf("%s %s at %s: %v (after %s)", method, path, start.Format("15:04:05.000"), err, took))
		}
		return false
	case resp.StatusCode != want:
		l.failed++
		if len(l.failures) < 20 {
			l.failures = append(l.failures, fmt.Sprintf("%s %s at %s = %d, want %d (after %s): %s", method, path, start.Format("15:04:05.000"), resp.StatusCode, want, took, b))
		}
		return false
	}
	if into != nil {
		_ = json.Unmarshal(b, into)
	}
	return true
}

func (l *rollLoad) run(workers int, f func(w, i int)) {
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; !l.stop.Load(); i++ {
				f(w, i)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
}

// worst returns the longest request, and the 99th percentile, of those
// started in [from, to).
func (l *rollLoad) worst(from, to time.Time) (n int, p99, max time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d []time.Duration
	for _, s := range l.samples {
		if !s.at.Before(from) && s.at.Before(to) {
			d = append(d, s.took)
		}
	}
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	return len(d), d[len(d)*99/100], d[len(d)-1]
}

// Roll every command-svc and query-svc instance, one at a time (SIGTERM,
// wait for the exit, start it again, wait until it is ready), under a
// steady load of reads and writes through the front door: not one request
// fails. On SIGTERM an instance fails /readyz at once, keeps serving for
// DRAIN_GRACE, leaves its consumer groups (its partitions move at once,
// not after the 6 s session timeout), forwards for DRAIN_HANDOVER, then
// stops. The longest request of each step bounds how long its partitions
// went unserved (requests for them wait for the new owner).
func TestRollingRestartUnderLoad(t *testing.T) {
	const partitions, seeded = 8, 40
	s := StartSystem(t, Options{Query: 2, Command: 2, Partitions: partitions, Env: map[string]string{
		"DRAIN_GRACE": "1s", "DRAIN_HANDOVER": "2s",
	}})
	l := &rollLoad{s: s, client: &http.Client{Timeout: 60 * time.Second}}

	uids := make([]string, seeded)
	for i := range seeded {
		var p profile
		if !l.do("seed", http.MethodPost, "/api/profile", map[string]string{"username": "roll", "email": fmt.Sprintf("roll%d@mail.com", i)}, http.StatusCreated, &p) {
			t.Fatalf("seeding: %v", l.failures)
		}
		uids[i] = p.UID
	}
	// Writers: each renames its own profiles (PUT, 200) and creates new
	// ones (POST, 201); readers read every profile (GET, 200).
	l.run(3, func(w, i int) {
		if i%4 == 3 {
			l.do("post", http.MethodPost, "/api/profile", map[string]string{"username": "new", "email": fmt.Sprintf("roll-w%d-%d@mail.com", w, i)}, http.StatusCreated, nil)
			return
		}
		k := (w + 3*i) % seeded
		l.do("put", http.MethodPut, "/api/profile/"+uids[k], map[string]string{"username": fmt.Sprintf("roll-%d", i), "email": fmt.Sprintf("roll%d@mail.com", k)}, http.StatusOK, nil)
	})
	l.run(4, func(w, i int) {
		l.do("get", http.MethodGet, "/api/profile/"+uids[(w*7+i)%seeded], nil, http.StatusOK, nil)
	})
	defer func() { l.stop.Store(true); l.wg.Wait() }()

	time.Sleep(3 * time.Second)
	base := time.Now()
	baseN, baseP99, baseMax := l.worst(base.Add(-3*time.Second), base)
	t.Logf("before the roll: %d requests in 3s, p99 %s, max %s", baseN, baseP99, baseMax)

	for _, name := range []string{"command-svc-0", "command-svc-1", "query-svc-0", "query-svc-1"} {
		from := time.Now()
		p := s.procs[name]
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// /readyz fails at once, while the instance still serves.
		notReady := time.Time{}
		for deadline := time.Now().Add(900 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			resp, err := http.Get(s.URLOf(name) + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					notReady = time.Now()
					break
				}
			}
		}
		if notReady.IsZero() {
			t.Errorf("%s: /readyz did not fail within 900ms of SIGTERM (DRAIN_GRACE is 1s)", name)
		}
		select {
		case <-p.done:
		case <-time.After(40 * time.Second):
			t.Fatalf("%s did not exit within 40s of SIGTERM", name)
		}
		exited := time.Now()
		t.Logf("%s drain timeline after SIGTERM: %s", name, s.timeline(name, from, "draining: /readyz", "left the consumer group", "http server stopped", "stopping"))
		delete(s.procs, name)
		s.Start(name)
		s.WaitReady(name)
		ready := time.Now()
		// Let the load run on the whole system again before the next.
		time.Sleep(3 * time.Second)
		n, p99, worst := l.worst(from, time.Now())
		t.Logf("%s: SIGTERM to exit %s, restart to ready %s; %d requests meanwhile, p99 %s, longest %s",
			name, exited.Sub(from).Round(time.Millisecond), ready.Sub(exited).Round(time.Millisecond), n, p99.Round(time.Millisecond), worst.Round(time.Millisecond))
		if n == 0 {
			t.Fatalf("no request ran while %s rolled", name)
		}
		if !logContains(t, s, name, "left the consumer group") {
			t.Errorf("%s did not log that it left its consumer group", name)
		}
	}
	l.stop.Store(true)
	l.wg.Wait()
	total := len(l.samples)
	if l.failed > 0 {
		s.recordDigest(fmt.Sprintf("%s: %d of %d requests failed", t.Name(), l.failed, total), l.firstFail.Add(-2*time.Second), l.lastFail.Add(time.Second))
		t.Fatalf("%d of %d requests failed during the roll; first ones:\n%s", l.failed, total, joinLines(l.failures))
	}
	t.Logf("%d requests, none failed", total)
}

// timeline returns, for each message, how long after from the instance
// last logged a line containing it.
func (s *System) timeline(name string, from time.Time, msgs ...string) string {
	b, err := os.ReadFile(filepath.Join(s.dir, name+".log"))
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, m := range msgs {
		at := "-"
		for _, line := range strings.Split(string(b), "\n") {
			var rec struct {
				Time time.Time `json:"time"`
				Msg  string    `json:"msg"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && strings.Contains(rec.Msg, m) && rec.Time.After(from) {
				at = rec.Time.Sub(from).Round(time.Millisecond).String()
			}
		}
		out = append(out, fmt.Sprintf("%q +%s", m, at))
	}
	return strings.Join(out, ", ")
}

func joinLines(xs []string) string {
	var b bytes.Buffer
	for _, x := range xs {
		b.WriteString("  " + x + "\n")
	}
	return b.String()
}

// With every broker gone, SIGTERM still ends every service within a
// bound: the leave is given up after 15 s, and consumers whose close
// waits for the brokers (sarama retries its last offset commit and its
// coordinator lookups for minutes) after STOP_TIMEOUT. Each service logs
// that it exits without them, and exits with an error.
func TestEveryServiceStopsInBoundedTimeWithKafkaGone(t *testing.T) {
	c := needCluster(t)
	const stopTimeout = 3 * time.Second
	s := StartSystem(t, Options{Query: 2, Command: 2, Projector: 1, Partitions: 6, Brokers: clusterBrokers,
		Env: map[string]string{"STOP_TIMEOUT": stopTimeout.String()}})
	if r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "gone", "email": "gone@mail.com"}, nil); r.Status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.Status, r.Body)
	}
	c.StopAll()

	// Every instance at once, as a node's shutdown does.
	from := time.Now()
	for _, name := range s.order {
		if err := s.procs[name].cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	// The leave's bound (service.RunStop), STOP_TIMEOUT for the tasks,
	// STOP_TIMEOUT for closing the clients and stores, and a margin.
	bound := 15*time.Second + 2*stopTimeout + 5*time.Second
	deadline := time.After(bound)
	exited := map[string]time.Duration{}
	for len(exited) < len(s.order) {
		select {
		case <-deadline:
			for _, name := range s.order {
				if _, ok := exited[name]; !ok {
					t.Errorf("%s did not exit within %s of SIGTERM with the brokers gone; killing it", name, bound)
					_ = s.procs[name].cmd.Process.Kill()
					<-s.procs[name].done
					exited[name] = -1
				}
			}
		case <-time.After(20 * time.Millisecond):
			for _, name := range s.order {
				select {
				case <-s.procs[name].done:
					if _, ok := exited[name]; !ok {
						exited[name] = time.Since(from)
						t.Logf("%s exited %s after SIGTERM, %v", name, exited[name].Round(time.Millisecond), s.procs[name].cmd.ProcessState)
					}
				default:
				}
			}
		}
	}
	for _, name := range slices.Clone(s.order) {
		delete(s.procs, name)
	}
	for _, name := range []string{"command-svc-0", "command-svc-1", "query-svc-0", "query-svc-1", "projector-0"} {
		for _, line := range []string{"exiting without the background tasks that did not stop", "exiting before the stores and Kafka clients closed"} {
			if logContains(t, s, name, line) {
				t.Logf("%s: %s", name, line)
			}
		}
	}
}
