package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"profiles/platform/kafkax"
	"profiles/platform/routing"
)

// SIGKILL one query-svc instance under a steady read load on its profiles
// through the survivors: each of the victim's partitions is warm on a
// survivor (STANDBYS=1, the default), so its reads are served from that
// warm copy, at a read index, as soon as the victim stops answering,
// instead of waiting for the session timeout, the rebalance and a
// catch-up. With three instances, a survivor without the warm copy sends
// the read to the one with it. Every answer is the profile as written, and
// none fails.
func TestAKilledOwnersReadsAreServedByItsStandby(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d instances", n), func(t *testing.T) { testAKilledOwnersReadsAreServedByItsStandby(t, n) })
	}
}

func testAKilledOwnersReadsAreServedByItsStandby(t *testing.T, instances int) {
	const partitions = 12
	s := StartSystem(t, Options{Query: instances, Partitions: partitions})
	queries := s.Instances("query-svc")
	victim := queries[1]
	survivors := slices.DeleteFunc(slices.Clone(queries), func(q string) bool { return q == victim })
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
	owner := s.owners(survivors[0])
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
	// The survivors keep every partition of the victim warm, each on one
	// survivor (STANDBYS=1). A survivor keeps warm what its own table
	// says, and one whose table is older than the others' may list a
	// partition that the current table keeps warm elsewhere: wait until
	// every survivor reads the table that owner is, and each partition is
	// listed once.
	warmOn := map[int32]string{} // the victim's partitions -> the survivor that keeps it warm
	deadline := time.Now().Add(30 * time.Second)
	noted := false
	for {
		clear(warmOn)
		listedBy := map[int32][]string{}
		settled := true
		for _, q := range survivors {
			d := s.debug(q)
			if d.Group.State != "Stable" || !maps.Equal(d.owners(), owner) {
				settled = false
			}
			for _, p := range d.Standby {
				if want[p] {
					listedBy[p] = append(listedBy[p], q)
					warmOn[p] = q
				}
			}
		}
		settled = settled && len(listedBy) == len(want)
		for p, qs := range listedBy {
			if len(qs) > 1 && !noted {
				noted = true
				t.Logf("partition %d is listed as warm by %v; waiting until it is by one", p, qs)
			}
			settled = settled && len(qs) == 1
		}
		if settled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the survivors keep %v of %s's partitions %v warm; want each on one survivor, by the table %v", listedBy, victim, want, owner)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%s's partitions are kept warm on %v", victim, warmOn)

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
				resp, err := client.Get(s.URLOf(survivors[i%len(survivors)]) + "/api/profile/" + uid)
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
		if r.at.Add(r.took).Before(kill) {
			continue // answered before the kill; one in flight then counts
		}
		afterKill++
		slowest = max(slowest, r.took)
		if r.standby {
			standby++
		}
	}
	t.Logf("%d reads answered after the kill, %d of them from a warm copy; the slowest took %v; %d failed", afterKill, standby, slowest.Round(time.Millisecond), failures.Load())
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
	// Each of the victim's partitions moved to the survivor that kept it
	// warm, so that its catch-up was the tail.
	after := s.owners(survivors[0])
	for p, q := range warmOn {
		if after[p] != q {
			t.Errorf("partition %d moved to %s; %s kept it warm", p, after[p], q)
		}
	}
}
