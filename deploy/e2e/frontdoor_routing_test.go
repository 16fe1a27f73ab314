package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"profiles/platform/kafkax"
)

// waitForFrontDoorTables waits until the front door has read the routing
// table of both services (profiles_frontdoor_table_reads_total).
func (s *System) waitForFrontDoorTables() {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, backend := range []string{"command-svc", "query-svc"} {
		name := fmt.Sprintf(`profiles_frontdoor_table_reads_total{backend=%q,result="ok"}`, backend)
		for s.MetricOr("frontdoor", name, 0) < 1 {
			if time.Now().After(deadline) {
				s.t.Fatalf("the front door has read no routing table of %s after 30s", backend)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// createProfiles creates n profiles through the front door.
func createProfiles(t *testing.T, s *System, prefix string, n int) []profile {
	t.Helper()
	out := make([]profile, n)
	parallel(n, 8, func(i int) {
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": fmt.Sprintf("%s%d", prefix, i), "email": fmt.Sprintf("%s%d@mail.com", prefix, i)}, nil)
		if r.Status != http.StatusCreated {
			t.Errorf("POST %d = %d %s", i, r.Status, r.Body)
			return
		}
		r.JSON(t, &out[i])
	})
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// With 2 query-svc and 2 command-svc instances, once the front door has
// read the routing tables, a GET or PUT by uid goes straight to the owner
// of the uid's partition: it answers X-Profiles-Hops: 0, and X-Served-By
// names the owner that the group assigns the partition to.
func TestFrontDoorRoutesToTheOwner(t *testing.T) {
	const partitions, requests = 12, 200
	s := StartSystem(t, Options{Query: 2, Command: 2, Partitions: partitions})
	created := createProfiles(t, s, "zerohop", 40)
	s.waitForFrontDoorTables()
	qOwner, cOwner := s.owners(s.Instances("query-svc")[0]), s.owners(s.Instances("command-svc")[0])
	owners0 := s.MetricOr("frontdoor", `profiles_frontdoor_requests_total{backend="query-svc",route="owner"}`, 0) +
		s.MetricOr("frontdoor", `profiles_frontdoor_requests_total{backend="command-svc",route="owner"}`, 0)

	zero, wrongOwner := 0, 0
	for i := range requests {
		p := created[i%len(created)]
		method, body, owner := http.MethodGet, any(nil), qOwner
		if i%2 == 1 {
			method, owner = http.MethodPut, cOwner
			body = map[string]string{"username": fmt.Sprintf("zerohop%dr%d", i%len(created), i), "email": p.Email}
		}
		r := s.Do(method, "/api/profile/"+p.UID, body, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("%s %s = %d %s", method, p.UID, r.Status, r.Body)
		}
		hops, by := r.Header.Get("X-Profiles-Hops"), r.Header.Get("X-Served-By")
		if hops == "0" {
			zero++
		}
		// The headers tell the truth: the owner served it.
		if want := owner[kafkax.Partition(p.UID, partitions)]; by != want {
			wrongOwner++
			t.Logf("%s %s served by %s in %s hops; the group assigns its partition to %s", method, p.UID, by, hops, want)
		}
	}
	owners := s.MetricOr("frontdoor", `profiles_frontdoor_requests_total{backend="query-svc",route="owner"}`, 0) +
		s.MetricOr("frontdoor", `profiles_frontdoor_requests_total{backend="command-svc",route="owner"}`, 0) - owners0
	t.Logf("%d of %d GET/PUT by uid through the front door answered in 0 hops (%.1f%%); %v counted as routed to the owner; %d served by another instance than the assigned owner",
		zero, requests, 100*float64(zero)/requests, owners, wrongOwner)
	if zero*100 < requests*95 {
		t.Errorf("%d of %d requests in 0 hops; want at least 95%%", zero, requests)
	}
	if wrongOwner > 0 {
		t.Errorf("%d answers named another instance than the owner", wrongOwner)
	}
}

// Under a read load through the front door, a query-svc instance joins
// (one the front door was not configured with: it learns it from the
// table) and then a configured one stops: no read fails, none returns an
// older version of a profile than a read that ended before it began, and
// writes go on meanwhile.
func TestFrontDoorReadsDuringRebalance(t *testing.T) {
	const partitions = 12
	s := StartSystem(t, Options{Query: 2, Command: 2, Partitions: partitions})
	created := createProfiles(t, s, "rebal", 40)
	s.waitForFrontDoorTables()

	// seen[i] is the highest version of created[i] that a finished read
	// returned.
	seen := make([]atomic.Int64, len(created))
	raise := func(i int, v int64) {
		for {
			old := seen[i].Load()
			if v <= old || seen[i].CompareAndSwap(old, v) {
				return
			}
		}
	}
	for i, p := range created {
		seen[i].Store(p.Version)
	}

	var (
		stop                              atomic.Bool
		reads, failed, older, zero, added atomic.Int64
		writes, writeFailures             atomic.Int64
		slowest                           atomic.Int64 // nanoseconds, of the current phase
		mu                                sync.Mutex
		failures                          []string
		wg                                sync.WaitGroup
		newcomer                          atomic.Value // the added instance's name
	)
	newcomer.Store("")
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	client := &http.Client{Timeout: 60 * time.Second}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				i := rand.IntN(len(created))
				floor := seen[i].Load()
				start := time.Now()
				resp, err := client.Get(s.URL + "/api/profile/" + created[i].UID)
				reads.Add(1)
				for took := int64(time.Since(start)); ; {
					if old := slowest.Load(); took <= old || slowest.CompareAndSwap(old, took) {
						break
					}
				}
				if err != nil {
					failed.Add(1)
					fail("reader %d: GET %s: %v", w, created[i].UID, err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var got profile
				if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &got) != nil {
					failed.Add(1)
					fail("reader %d: GET %s = %d %s", w, created[i].UID, resp.StatusCode, b)
					continue
				}
				if got.Version < floor {
					older.Add(1)
					fail("reader %d: GET %s returned version %d after a read of version %d had ended (served by %s)",
						w, created[i].UID, got.Version, floor, resp.Header.Get("X-Served-By"))
				}
				raise(i, got.Version)
				if resp.Header.Get("X-Profiles-Hops") == "0" {
					zero.Add(1)
				}
				if by := resp.Header.Get("X-Served-By"); by != "" && by == newcomer.Load().(string) {
					added.Add(1)
				}
			}
		}()
	}
	// One writer, so that versions move on while the partitions do.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; !stop.Load(); n++ {
			i := rand.IntN(len(created))
			body, _ := json.Marshal(map[string]string{"username": fmt.Sprintf("rebal%dw%d", i, n), "email": created[i].Email})
			req, _ := http.NewRequest(http.MethodPut, s.URL+"/api/profile/"+created[i].UID, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			writes.Add(1)
			if err != nil {
				writeFailures.Add(1)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// 202: applied, but not yet visible within the wait.
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
				writeFailures.Add(1)
				t.Logf("writer: PUT %s = %d %s", created[i].UID, resp.StatusCode, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	phase := func(name string, d time.Duration) {
		r0, f0, z0 := reads.Load(), failed.Load(), zero.Load()
		slowest.Store(0)
		time.Sleep(d)
		r, f, z := reads.Load()-r0, failed.Load()-f0, zero.Load()-z0
		t.Logf("%s: %d reads, %d failed, %d in 0 hops (%.1f%%), the slowest took %v", name, r, f, z,
			100*float64(z)/float64(max(r, 1)), time.Duration(slowest.Load()).Round(time.Millisecond))
	}
	phase("steady, 2 query-svc instances", 2*time.Second)

	name := s.AddInstance("query-svc")
	newcomer.Store(name)
	s.WaitReady(name)
	deadline := time.Now().Add(45 * time.Second)
	for {
		d := s.debug(name)
		if d.Group.State == "Stable" && len(d.Group.Members) == 3 && len(d.Owned) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s owns nothing 45s after it started: %+v", name, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
	phase(name+" joined", 5*time.Second)

	victim := s.Instances("query-svc")[1]
	s.Stop(victim)
	phase(victim+" stopped", 10*time.Second)

	stop.Store(true)
	wg.Wait()
	for _, f := range failures {
		t.Log(f)
	}
	t.Logf("%d reads through the front door: %d failed, %d older than one already read, %d in 0 hops (%.1f%%), %d served by %s; %d writes, %d failed",
		reads.Load(), failed.Load(), older.Load(), zero.Load(), 100*float64(zero.Load())/float64(max(reads.Load(), 1)), added.Load(), name, writes.Load(), writeFailures.Load())
	if failed.Load() > 0 || older.Load() > 0 {
		t.Errorf("%d reads failed and %d went back to an older version during the rebalances; want none", failed.Load(), older.Load())
	}
	if added.Load() == 0 {
		t.Errorf("no read was served by %s, which owned partitions", name)
	}
}
