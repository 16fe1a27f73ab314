package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// FailoverResult is what reads of a killed query-svc instance's
// partitions saw, sent to the other instance under a closed loop.
type FailoverResult struct {
	// Killed is the instance SIGKILLed.
	Killed string `json:"killed"`
	// Reads answered after the kill (those in flight at the kill
	// included); Standby of them from the other instance's warm copy
	// (X-Profiles-Standby), Errors not 200.
	Reads   int `json:"reads"`
	Standby int `json:"standby"`
	Errors  int `json:"errors"`
	// SlowestSeconds is the longest of those reads, and P99Seconds their
	// 99th percentile.
	SlowestSeconds float64 `json:"slowest_seconds"`
	P99Seconds     float64 `json:"p99_seconds"`
	// WatchedSeconds is how long after the kill the reads went on: past
	// the session timeout and the rebalance.
	WatchedSeconds float64 `json:"watched_seconds"`
}

// failover SIGKILLs query-svc-1 while 8 workers read the profiles of its
// partitions from query-svc-0, and records how long those reads took
// until its session timed out and its partitions moved. With standbys the
// survivor serves them from its warm copy at once; without, they wait for
// the session timeout and the catch-up. query-svc-1 is started again at
// the end.
func (b *bench) failover(ctx context.Context) error {
	victim, survivor := b.query[1], b.query[0]
	var mine []int // seeded profiles in the victim's partitions
	for i := range b.cfg.Profiles {
		if b.owner[b.part[i]] == 1 {
			mine = append(mine, i)
		}
	}
	if len(mine) == 0 {
		return fmt.Errorf("failover: %s owns none of the seeded profiles", victim.Name)
	}
	type read struct {
		at      time.Time
		took    time.Duration
		standby bool
		ok      bool
	}
	var (
		stop  atomic.Bool
		mu    sync.Mutex
		reads []read
		wg    sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for !stop.Load() && ctx.Err() == nil {
				uid := UID(mine[rand.IntN(len(mine))])
				began := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, survivor.URL()+"/api/profile/"+uid, nil)
				resp, err := b.client.Do(req)
				r := read{at: began}
				if err == nil {
					r.ok = resp.StatusCode == http.StatusOK
					r.standby = resp.Header.Get("X-Profiles-Standby") != ""
					resp.Body.Close()
				}
				r.took = time.Since(began)
				mu.Lock()
				reads = append(reads, r)
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	killed := time.Now()
	victim.Kill()
	b.logf("failover: %s killed; reading its partitions from %s", victim.Name, survivor.Name)
	watch := 15 * time.Second // the services' SESSION_TIMEOUT (10s), the rebalance and the catch-up
	select {
	case <-ctx.Done():
	case <-time.After(watch):
	}
	stop.Store(true)
	wg.Wait()

	res := FailoverResult{Killed: victim.Name, WatchedSeconds: watch.Seconds()}
	var took []time.Duration
	for _, r := range reads {
		if r.at.Add(r.took).Before(killed) {
			continue // answered before the kill; one in flight then counts
		}
		res.Reads++
		if !r.ok {
			res.Errors++
		}
		if r.standby {
			res.Standby++
		}
		took = append(took, r.took)
	}
	if len(took) > 0 {
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		res.SlowestSeconds = round3(took[len(took)-1].Seconds())
		res.P99Seconds = round3(took[len(took)*99/100].Seconds())
	}
	b.rep.Failover = &res
	b.logf("failover: %d reads after the kill, %d from the warm copy, %d failed; the slowest %.3fs, p99 %.3fs",
		res.Reads, res.Standby, res.Errors, res.SlowestSeconds, res.P99Seconds)
	if err := victim.Start(); err != nil {
		return err
	}
	_, _, err := victim.Ready(ctx, b.cfg.LoadTimeout)
	return err
}
