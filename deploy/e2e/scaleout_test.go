package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"profiles/platform/kafkax"
)

// debugView is what /debug/assignment shows.
type debugView struct {
	Self struct {
		ID string `json:"id"`
	} `json:"self"`
	Owned []int32 `json:"owned"`
	Group struct {
		State   string `json:"state"`
		Members []struct {
			ID         string  `json:"id"`
			URL        string  `json:"url"`
			Partitions []int32 `json:"partitions"`
		} `json:"members"`
	} `json:"group"`
	Held map[string][]int32 `json:"held"`
	// Standby are the partitions it keeps warm for other instances.
	Standby []int32 `json:"standby"`
}

func (s *System) debug(name string) debugView {
	s.t.Helper()
	resp, err := http.Get(s.URLOf(name) + "/debug/assignment")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var d debugView
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		s.t.Fatal(err)
	}
	return d
}

// owners returns partition → instance id by the table d shows.
func (d debugView) owners() map[int32]string {
	out := map[int32]string{}
	for _, m := range d.Group.Members {
		for _, p := range m.Partitions {
			out[p] = m.ID
		}
	}
	return out
}

// owners returns partition → instance id, as the group of name sees it,
// once it sees a stable group.
func (s *System) owners(name string) map[int32]string {
	s.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		d := s.debug(name)
		out := d.owners()
		if d.Group.State == "Stable" && len(out) > 0 {
			return out
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s sees no stable group: %+v", name, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// parallel runs f(i) for i in [0,n) on workers goroutines.
func parallel(n, workers int, f func(i int)) {
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

func pick(xs []string) string { return xs[rand.IntN(len(xs))] }

// 3 query-svc and 2 command-svc instances on 12 partitions: every request
// through every instance gets the right answer, from the owner of the key's
// partition, in at most one hop, and each instance stores only its own
// partitions.
func TestRoutingAcrossInstances(t *testing.T) {
	const partitions, profiles = 12, 1000
	s := StartSystem(t, Options{Query: 3, Command: 2, Partitions: partitions})
	queries, commands := s.Instances("query-svc"), s.Instances("command-svc")

	cOwner := s.owners(commands[0])
	created := make([]profile, profiles)
	parallel(profiles, 8, func(i int) {
		via := pick(commands)
		r := s.DoAt(via, http.MethodPost, "/api/profile",
			map[string]string{"username": fmt.Sprintf("user%d", i), "email": fmt.Sprintf("route%d@mail.com", i)}, nil)
		if r.Status != http.StatusCreated {
			t.Errorf("POST %d = %d %s", i, r.Status, r.Body)
			return
		}
		r.JSON(t, &created[i])
		// The command ran on the single writer of the new uid's partition.
		owner := cOwner[kafkax.Partition(created[i].UID, partitions)]
		if by, hops := r.Header.Get("X-Served-By"), r.Header.Get("X-Profiles-Hops"); by != owner || (hops == "1") != (via != owner) {
			t.Errorf("POST via %s ran on %s (%s hops); the owner is %s", via, by, hops, owner)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	qOwner := s.owners(queries[0])
	if len(qOwner) != partitions {
		t.Fatalf("query-svc group assigns %d of %d partitions: %v", len(qOwner), partitions, qOwner)
	}
	var checked, forwarded atomic.Int64
	parallel(profiles*len(queries), 16, func(k int) {
		p, via := created[k/len(queries)], queries[k%len(queries)]
		for _, req := range []struct{ path, key string }{
			{"/api/profile/" + p.UID, p.UID},
			{"/api/search?email=" + p.Email, s.EmailKey(p.Email)}, // placed by the email's HMAC
		} {
			r := s.DoAt(via, http.MethodGet, req.path, nil, nil)
			if r.Status != http.StatusOK {
				t.Errorf("GET %s via %s = %d %s", req.path, via, r.Status, r.Body)
				return
			}
			if req.key == p.UID {
				var got profile
				r.JSON(t, &got)
				if got != p {
					t.Errorf("GET via %s = %+v, want %+v", via, got, p)
				}
			} else {
				var found []profile
				r.JSON(t, &found)
				if len(found) != 1 || found[0] != p {
					t.Errorf("search %s via %s = %+v", p.Email, via, found)
				}
			}
			owner := qOwner[kafkax.Partition(req.key, partitions)]
			servedBy, hops := r.Header.Get("X-Served-By"), r.Header.Get("X-Profiles-Hops")
			wantHops := "0"
			if via != owner {
				wantHops = "1"
				forwarded.Add(1)
			}
			if servedBy != owner || hops != wantHops {
				t.Errorf("%s via %s served by %s in %s hops; want %s in %s", req.path, via, servedBy, hops, owner, wantHops)
			}
			checked.Add(1)
		}
	})
	t.Logf("%d reads checked through %d instances, %d of them forwarded once", checked.Load(), len(queries), forwarded.Load())

	// Each instance stores the partitions it owns, and those it keeps warm
	// for others (STANDBYS=1: every partition on one instance besides its
	// owner), and nothing else once its group has settled.
	deadline := time.Now().Add(15 * time.Second)
	for {
		problems := storedOnlyWhatItServesOrKeepsWarm(s, queries, partitions)
		if len(problems) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, p := range problems {
				t.Error(p)
			}
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// storedOnlyWhatItServesOrKeepsWarm checks the views of queries: each holds
// only the partitions it owns or keeps warm, never keeps warm one it owns,
// and every partition is warm on exactly one instance.
func storedOnlyWhatItServesOrKeepsWarm(s *System, queries []string, partitions int) []string {
	var problems []string
	warmOn := map[int32][]string{}
	for _, q := range queries {
		d := s.debug(q)
		kept := map[int32]bool{}
		for _, p := range d.Owned {
			kept[p] = true
		}
		for _, p := range d.Standby {
			if kept[p] {
				problems = append(problems, fmt.Sprintf("%s keeps partition %d warm as a standby but owns it", q, p))
			}
			kept[p] = true
			warmOn[p] = append(warmOn[p], q)
		}
		for topic, held := range d.Held {
			for _, p := range held {
				if !kept[p] {
					problems = append(problems, fmt.Sprintf("%s stores partition %d of %s but owns only %v and keeps warm only %v", q, p, topic, d.Owned, d.Standby))
				}
			}
		}
	}
	for p := range int32(partitions) {
		if len(warmOn[p]) != 1 {
			problems = append(problems, fmt.Sprintf("partition %d is kept warm on %v, want one instance", p, warmOn[p]))
		}
	}
	return problems
}

// SIGKILL one query-svc instance under a steady read load: its partitions
// move, reads of them succeed again within 20 s (6 s of session timeout,
// the rebalance and the catch-up), no read
// fails meanwhile (they wait), and every profile stays readable.
func TestQueryInstanceLossUnderLoad(t *testing.T) {
	const profiles = 120
	s := StartSystem(t, Options{Query: 3, Partitions: 12})
	queries := s.Instances("query-svc")
	victim, survivors := queries[1], []string{queries[0], queries[2]}
	var uids []string
	parallel(profiles, 8, func(i int) {
		var p profile
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "l", "email": fmt.Sprintf("loss%d@mail.com", i)}, nil)
		if r.Status != http.StatusCreated {
			t.Errorf("POST = %d %s", r.Status, r.Body)
			return
		}
		r.JSON(t, &p)
		appendLocked(&uids, p.UID)
	})
	owner := s.owners(queries[0])
	var victims []string // profiles whose partition the victim owns
	for _, u := range uids {
		if owner[kafkax.Partition(u, 12)] == victim {
			victims = append(victims, u)
		}
	}
	if len(victims) == 0 {
		t.Fatalf("%s owns none of the profiles", victim)
	}

	// Steady load through the surviving instances, on the victim's profiles.
	var (
		stop            atomic.Bool
		reads, failures atomic.Int64
		lastFailure     atomic.Int64
		wg              sync.WaitGroup
	)
	client := &http.Client{Timeout: 30 * time.Second}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; !stop.Load(); i++ {
				resp, err := client.Get(s.URLOf(survivors[i%2]) + "/api/profile/" + victims[i%len(victims)])
				reads.Add(1)
				if err != nil || resp.StatusCode != http.StatusOK {
					failures.Add(1)
					lastFailure.Store(time.Now().UnixNano())
				}
				if err == nil {
					resp.Body.Close()
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	killed := time.Now()
	s.Kill(victim)

	// Reads of the victim's profiles succeed again within 20 s.
	deadline := killed.Add(20 * time.Second)
	for {
		d := s.debug(survivors[0])
		moved := d.Group.State == "Stable" && len(d.Group.Members) == 2
		if moved {
			ok := true
			for _, u := range victims {
				if r := s.DoAt(survivors[0], http.MethodGet, "/api/profile/"+u, nil, nil); r.Status != http.StatusOK {
					ok = false
					break
				}
			}
			if ok {
				took := time.Since(killed)
				t.Logf("the victim's %d profiles are readable again %v after the kill", len(victims), took.Round(10*time.Millisecond))
				if took > 20*time.Second {
					t.Fatalf("reads of %s's partitions took %v to succeed again; want at most 20s", victim, took)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("reads of %s's partitions still fail 20s after the kill", victim)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	t.Logf("steady load: %d reads, %d failed during the move", reads.Load(), failures.Load())
	if failures.Load() > 0 {
		t.Errorf("%d of %d reads failed while the partitions moved; want 0", failures.Load(), reads.Load())
	}
	for _, u := range uids {
		if r := s.DoAt(pick(survivors), http.MethodGet, "/api/profile/"+u, nil, nil); r.Status != http.StatusOK {
			t.Fatalf("profile %s unreadable after the move: %d", u, r.Status)
		}
	}
}

var appendMu sync.Mutex

func appendLocked(xs *[]string, x string) {
	appendMu.Lock()
	defer appendMu.Unlock()
	*xs = append(*xs, x)
}

// A new query-svc instance takes partitions over and serves them.
func TestQueryInstanceGain(t *testing.T) {
	s := StartSystem(t, Options{Query: 2, Partitions: 12})
	var uids []string
	for i := range 60 {
		var p profile
		s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "g", "email": fmt.Sprintf("gain%d@mail.com", i)}, nil).JSON(t, &p)
		uids = append(uids, p.UID)
	}
	added := s.AddInstance("query-svc")
	s.WaitReady(added)
	deadline := time.Now().Add(30 * time.Second)
	var d debugView
	for {
		d = s.debug(added)
		if d.Group.State == "Stable" && len(d.Owned) > 0 && len(d.Group.Members) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s owns nothing 30s after joining: %+v", added, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.WaitReady(added)
	owned := map[int32]bool{}
	for _, p := range d.Owned {
		owned[p] = true
	}
	served := 0
	for _, u := range uids {
		r := s.DoAt(s.Instances("query-svc")[0], http.MethodGet, "/api/profile/"+u, nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s = %d %s", u, r.Status, r.Body)
		}
		if owned[kafkax.Partition(u, 12)] {
			if by := r.Header.Get("X-Served-By"); by != added {
				t.Fatalf("%s is in a partition of %s but was served by %s", u, added, by)
			}
			served++
		}
	}
	t.Logf("%s took partitions %v and served %d profiles", added, d.Owned, served)
}

// Restart an instance with its Pebble directory kept: it gets its
// partitions back (static membership) and re-reads only the tail. It
// stops without leaving its group (DRAIN_LEAVE=false, a restart in place):
// a drain that leaves would hand its partitions over.
func TestQueryInstanceRestartReadsOnlyTheTail(t *testing.T) {
	s := StartSystem(t, Options{Query: 2, Partitions: 12, KindEnv: map[string]map[string]string{"query-svc": {"DRAIN_LEAVE": "false"}}})
	want := writeFixture(t, s, "r", 30)
	name := s.Instances("query-svc")[0]
	before := s.debug(name).Owned

	// Written while it is down, without waiting for readers, so that it is
	// back before its session expires and keeps its partitions.
	s.Stop(name)
	tail := writeFixtureWith(t, s, "t", 6, map[string]string{"Prefer": "respond-async"})
	s.Start(name)
	s.WaitReady(name)
	if after := s.debug(name).Owned; fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("partitions changed across the restart: %v, then %v", before, after)
	}
	// 6 profiles: 6 creates, 2 changes (two events each) and 2 deletes, each
	// a snapshot and one or two index records. Nothing written before the
	// stop is read again.
	read := s.Metric(name, readMetric)
	if read > 6*2+2*4+2*2 {
		t.Fatalf("%s re-read %v records after a restart; only the tail was written", name, read)
	}
	t.Logf("%s re-read %v records after the restart", name, read)
	checkFixture(t, s, want)
	checkFixture(t, s, tail)
}

// Full-replica mode: every query-svc instance holds every partition and
// answers every read itself, and a write returns once every replica has it.
func TestFullReplicaModeAnswersLocally(t *testing.T) {
	s := StartSystem(t, Options{Query: 2, Partitions: 6, Env: map[string]string{"REPLICA_MODE": "full", "QUERY_WAIT_ALL": "true"}})
	want := writeFixture(t, s, "f", 12)
	for _, q := range s.Instances("query-svc") {
		for uid, w := range want {
			r := s.DoAt(q, http.MethodGet, "/api/profile/"+uid, nil, nil)
			if (w == nil) != (r.Status == http.StatusNotFound) {
				t.Fatalf("GET %s via %s = %d", uid, q, r.Status)
			}
			if w != nil {
				if by, hops := r.Header.Get("X-Served-By"), r.Header.Get("X-Profiles-Hops"); by != q || hops != "0" {
					t.Fatalf("GET via %s served by %s in %s hops", q, by, hops)
				}
				if found := s.searchAt(q, w.Email); len(found) != 1 || found[0] != uid {
					t.Fatalf("search %s via %s = %v", w.Email, q, found)
				}
			}
		}
	}
}
