package e2e

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// randomWorkload runs n random operations through the front door with 32
// workers: creates, changes of username or email, and deletes of live
// profiles. Refusals (404, 409, 412) are part of a random workload. Every
// write waits until reads show it, so the rate is bound by that latency,
// not by CPU: 32 workers run it about three times as fast as 8.
func randomWorkload(t *testing.T, s *System, n int) {
	t.Helper()
	var (
		mu   sync.Mutex
		live []string
		next atomic.Int64
		wg   sync.WaitGroup
		ok   atomic.Int64
	)
	start := time.Now()
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				mu.Lock()
				var uid string
				if len(live) > 0 {
					uid = live[rng.IntN(len(live))]
				}
				mu.Unlock()
				op := rng.IntN(10)
				var r Response
				switch {
				case uid == "" || op < 4:
					r = s.Do(http.MethodPost, "/api/profile", map[string]string{"username": fmt.Sprintf("w%d", i), "email": fmt.Sprintf("w%d@load.example", i)}, nil)
					if r.Status == http.StatusCreated {
						var p profile
						r.JSON(t, &p)
						mu.Lock()
						live = append(live, p.UID)
						mu.Unlock()
					}
				case op < 8:
					r = s.Do(http.MethodPut, "/api/profile/"+uid, map[string]string{"username": fmt.Sprintf("u%d", i), "email": fmt.Sprintf("e%d@load.example", i)}, nil)
				default:
					r = s.Do(http.MethodDelete, "/api/profile/"+uid, nil, nil)
					mu.Lock()
					for j, u := range live {
						if u == uid {
							live = append(live[:j], live[j+1:]...)
							break
						}
					}
					mu.Unlock()
				}
				if r.Status >= 500 {
					t.Errorf("workload: %d %s", r.Status, r.Body)
				} else if r.Status < 300 {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("workload: %d operations (%d succeeded) in %s", n, ok.Load(), time.Since(start).Round(time.Millisecond))
}
