package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"profiles/platform/kafkax"
	"profiles/platform/routing"
)

// SIGKILL one of two query-svc instances under a steady read load on its
// profiles: the survivor keeps the victim's partitions warm (STANDBYS=1,
// the default), so it serves their reads from its warm copy, at a read
// index, as soon as the victim stops answering, instead of waiting for the
// session timeout, the rebalance and a catch-up. Every answer is the
// profile as written, and none fails.
func TestAKilledOwnersReadsAreServedByItsStandby(t *testing.T) {
	const partitions = 12
	s := StartSystem(t, Options{Query: 2, Partitions: partitions})
	queries := s.Instances("query-svc")
	victim, survivor := queries[1], queries[0]
	var mu sync.Mutex
	created := map[string]profile{}
	parallel(60, 8, func(i int) {
		var p profile
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "w", "email": fmt.Sprintf("warm%d@mail.com", i)}, nil)
		if r.Status != http.StatusCreated {
			t.Errorf("POST = %d %s", r.Status, r.Body)
			return
		}
		r.JSON(t, &p)
		mu.Lock()
		created[p.UID] = p
		mu.Unlock()
	})
	if t.Failed() {
		t.FailNow()
	}
	owner := s.owners(survivor)
	var victims []string
	want := map[int32]bool{}
	for uid := range created {
		if p := kafkax.Partition(uid, partitions); owner[p] == victim {
			victims = append(victims, uid)
			want[p] = true
		}
	}
	if len(victims) == 0 {
		t.Fatalf("%s owns none of the profiles", victim)
	}
	// The survivor keeps every partition of the victim warm.
	deadline := time.Now().Add(30 * time.Second)
	for {
		d := s.debug(survivor)
		warm := 0
		for p := range want {
			if slices.Contains(d.Standby, p) {
				warm++
			}
		}
		if warm == len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s keeps %v warm, not all of %s's partitions %v", survivor, d.Standby, victim, want)
		}
		time.Sleep(200 * time.Millisecond)
	}

	type read struct {
		at      time.Time
		took    time.Duration
		standby bool
	}
	var (
		stop     atomic.Bool
		killed   atomic.Int64
		failures atomic.Int64
		readsMu  sync.Mutex
		reads    []read
		wg       sync.WaitGroup
	)
	client := &http.Client{Timeout: 30 * time.Second}
	for w := range 4 {
		wg.Go(func() {
			for i := w; !stop.Load(); i += 4 {
				uid := victims[i%len(victims)]
				began := time.Now()
				resp, err := client.Get(s.URLOf(survivor) + "/api/profile/" + uid)
				if err != nil {
					failures.Add(1)
					t.Errorf("GET %s: %v", uid, err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var got profile
				if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil || got != created[uid] {
					failures.Add(1)
					t.Errorf("GET %s = %d %s; want %+v", uid, resp.StatusCode, body, created[uid])
					continue
				}
				readsMu.Lock()
				reads = append(reads, read{at: began, took: time.Since(began), standby: resp.Header.Get(routing.HeaderStandby) != ""})
				readsMu.Unlock()
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	killed.Store(time.Now().UnixNano())
	s.Kill(victim)
	// Past the session timeout (6 s here), the rebalance and the catch-up.
	time.Sleep(10 * time.Second)
	stop.Store(true)
	wg.Wait()

	kill := time.Unix(0, killed.Load())
	var afterKill, standby int
	var slowest time.Duration
	for _, r := range reads {
		if r.at.Before(kill) {
			continue
		}
		afterKill++
		slowest = max(slowest, r.took)
		if r.standby {
			standby++
		}
	}
	t.Logf("%d reads after the kill, %d of them from %s's warm copy; the slowest took %v; %d failed", afterKill, standby, survivor, slowest.Round(time.Millisecond), failures.Load())
	if failures.Load() > 0 {
		t.Fatalf("%d reads failed", failures.Load())
	}
	if standby == 0 {
		t.Fatalf("no read was served from the warm copy")
	}
	// The aim: a dead owner's partitions are read again within 3 s.
	if slowest > 3*time.Second {
		t.Fatalf("a read of %s's partitions took %v after the kill; want at most 3s", victim, slowest)
	}
}
