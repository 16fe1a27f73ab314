package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"profiles/events"
	"profiles/platform/kafkax"
)

// eventsOf reads the event log partition of uid and returns uid's events.
func eventsOf(t *testing.T, s *System, partitions int32, uid string) []events.Event {
	t.Helper()
	var out []events.Event
	for _, m := range ReadTopic(t, KafkaReadCommitted(t), s.env["EVENTS_TOPIC"], []int32{kafkax.Partition(uid, partitions)}) {
		e, err := codecOfTests.DecodeEvent(m.Value)
		if err != nil {
			t.Fatalf("undecodable event at %d: %v", m.Offset, err)
		}
		if e.UID == uid {
			out = append(out, e)
		}
	}
	return out
}

// checkConsecutive fails unless the versions are 1, 2, 3, ... with no gap or duplicate.
func checkConsecutive(t *testing.T, es []events.Event) {
	t.Helper()
	for i, e := range es {
		if e.Version != int64(i+1) {
			t.Fatalf("event %d (%s) has version %d; the log is %v", i, e.Type, e.Version, es)
		}
	}
}

// 50 concurrent PUTs of one profile through different instances, all with
// the same If-Match: exactly one wins.
func TestIfMatchRaceHasExactlyOneWinner(t *testing.T) {
	const partitions = 4
	s := StartSystem(t, Options{Query: 2, Command: 2, Partitions: partitions})
	var p profile
	s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "race", "email": "race@mail.com"}, nil).JSON(t, &p)

	vias := append(s.Instances("command-svc"), "frontdoor")
	count := racing(50, func(i int) int {
		return s.DoAt(vias[i%len(vias)], http.MethodPut, "/api/profile/"+p.UID,
			map[string]string{"username": fmt.Sprintf("writer%d", i), "email": "race@mail.com"}, map[string]string{"If-Match": `"1"`}).Status
	})
	if count[http.StatusOK] != 1 || count[http.StatusPreconditionFailed] != 49 {
		t.Fatalf("statuses %v; want one 200 and 49 412", count)
	}
	es := eventsOf(t, s, partitions, p.UID)
	checkConsecutive(t, es)
	if len(es) != 2 {
		t.Fatalf("%d events in the log; want the create and one change", len(es))
	}
	// A stale If-Match on DELETE is refused too, and the current one works.
	if r := s.Do(http.MethodDelete, "/api/profile/"+p.UID, nil, map[string]string{"If-Match": `"1"`}); r.Status != http.StatusPreconditionFailed || r.Header.Get("ETag") != `"2"` {
		t.Fatalf("DELETE with a stale If-Match = %d, ETag %s", r.Status, r.Header.Get("ETag"))
	}
	if r := s.Do(http.MethodDelete, "/api/profile/"+p.UID, nil, map[string]string{"If-Match": `"2"`}); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE with the current If-Match = %d %s", r.Status, r.Body)
	}
}

// A PUT sent after a DELETE has answered 204 gets 404, whichever instance
// it goes through, even while other writes race with the delete.
func TestNoResurrectionAfterDelete(t *testing.T) {
	const partitions = 4
	s := StartSystem(t, Options{Query: 2, Command: 2, Partitions: partitions})
	vias := append(s.Instances("command-svc"), "frontdoor")
	for round := range 5 {
		var p profile
		s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "z", "email": fmt.Sprintf("z%d@mail.com", round)}, nil).JSON(t, &p)
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			deletedAt time.Time
		)
		type put struct {
			start  time.Time
			status int
		}
		var puts []put
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := s.DoAt(vias[round%len(vias)], http.MethodDelete, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNoContent {
				t.Errorf("DELETE = %d %s", r.Status, r.Body)
			}
			mu.Lock()
			deletedAt = time.Now()
			mu.Unlock()
		}()
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(i) * time.Millisecond)
				start := time.Now()
				r := s.DoAt(vias[i%len(vias)], http.MethodPut, "/api/profile/"+p.UID,
					map[string]string{"username": fmt.Sprintf("p%d", i), "email": fmt.Sprintf("z%d@mail.com", round)}, nil)
				mu.Lock()
				puts = append(puts, put{start, r.Status})
				mu.Unlock()
			}()
		}
		wg.Wait()
		late := 0
		for _, pt := range puts {
			if pt.start.After(deletedAt) {
				late++
				if pt.status != http.StatusNotFound {
					t.Fatalf("round %d: a PUT sent after the DELETE answered got %d", round, pt.status)
				}
			}
		}
		es := eventsOf(t, s, partitions, p.UID)
		checkConsecutive(t, es)
		if last := es[len(es)-1]; last.Type != events.TypeProfileDeleted {
			t.Fatalf("round %d: the log goes on after the delete: %v", round, es)
		}
		if r := s.Do(http.MethodGet, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNotFound {
			t.Fatalf("round %d: GET after the race = %d", round, r.Status)
		}
		t.Logf("round %d: %d events, %d PUTs sent after the delete all got 404", round, len(es), late)
	}
}

// A retried POST with the same Idempotency-Key returns the first result and
// creates nothing new, through any instance.
func TestIdempotentPost(t *testing.T) {
	const partitions = 4
	s := StartSystem(t, Options{Query: 2, Command: 2, Partitions: partitions})
	body := map[string]string{"username": "idem", "email": "idem@mail.com"}
	key := map[string]string{"Idempotency-Key": "0d1c7a52-order-42"}
	var first, again profile
	r := s.DoAt("command-svc-0", http.MethodPost, "/api/profile", body, key)
	if r.Status != http.StatusCreated || r.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first POST = %d %v %s", r.Status, r.Header, r.Body)
	}
	r.JSON(t, &first)
	for _, via := range []string{"command-svc-1", "frontdoor", "command-svc-0"} {
		r = s.DoAt(via, http.MethodPost, "/api/profile", body, key)
		if r.Status != http.StatusCreated || r.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry via %s = %d %v %s", via, r.Status, r.Header, r.Body)
		}
		r.JSON(t, &again)
		if again != first {
			t.Fatalf("retry via %s returned %+v, first %+v", via, again, first)
		}
	}
	if es := eventsOf(t, s, partitions, first.UID); len(es) != 1 {
		t.Fatalf("retries appended events: %v", es)
	}
	if found := s.search("idem@mail.com"); len(found) != 1 {
		t.Fatalf("search finds %v", found)
	}
	if r = s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "other", "email": "idem@mail.com"}, key); r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("same key, other body = %d %s", r.Status, r.Body)
	}
	if r = s.Do(http.MethodPost, "/api/profile", body, map[string]string{"Idempotency-Key": "has space"}); r.Status != http.StatusBadRequest {
		t.Fatalf("invalid key = %d %s", r.Status, r.Body)
	}
}

// The seed flow, 100 times, each request through a randomly chosen
// instance, with no sleeps: never a stale read.
func TestReadYourWritesThroughRandomInstances(t *testing.T) {
	s := StartSystem(t, Options{Query: 3, Command: 2, Partitions: 12})
	commands, queries := s.Instances("command-svc"), s.Instances("query-svc")
	get := func(uid string) (int, profile) {
		var p profile
		r := s.DoAt(pick(queries), http.MethodGet, "/api/profile/"+uid, nil, nil)
		if r.Status == http.StatusOK {
			r.JSON(t, &p)
		}
		return r.Status, p
	}
	for i := range 100 {
		e1, e2 := fmt.Sprintf("ryw%d-1@mail.com", i), fmt.Sprintf("ryw%d-2@mail.com", i)
		var p profile
		r := s.DoAt(pick(commands), http.MethodPost, "/api/profile", map[string]string{"username": "bob", "email": e1}, nil)
		if r.Status != http.StatusCreated {
			t.Fatalf("round %d: POST = %d %s", i, r.Status, r.Body)
		}
		r.JSON(t, &p)
		if st, got := get(p.UID); st != http.StatusOK || got != p {
			t.Fatalf("round %d: stale GET after POST: %d %+v", i, st, got)
		}
		if found := s.searchAt(pick(queries), e1); len(found) != 1 || found[0] != p.UID {
			t.Fatalf("round %d: stale search after POST: %v", i, found)
		}
		if r = s.DoAt(pick(commands), http.MethodPut, "/api/profile/"+p.UID, map[string]string{"username": "bob", "email": e2}, nil); r.Status != http.StatusOK {
			t.Fatalf("round %d: PUT = %d %s", i, r.Status, r.Body)
		}
		if st, got := get(p.UID); st != http.StatusOK || got.Email != e2 || got.Version != 2 {
			t.Fatalf("round %d: stale GET after PUT: %d %+v", i, st, got)
		}
		if found := s.searchAt(pick(queries), e2); len(found) != 1 {
			t.Fatalf("round %d: stale search by the new email: %v", i, found)
		}
		if found := s.searchAt(pick(queries), e1); len(found) != 0 {
			t.Fatalf("round %d: stale search by the old email: %v", i, found)
		}
		if r = s.DoAt(pick(commands), http.MethodDelete, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNoContent {
			t.Fatalf("round %d: DELETE = %d %s", i, r.Status, r.Body)
		}
		if st, _ := get(p.UID); st != http.StatusNotFound {
			t.Fatalf("round %d: stale GET after DELETE: %d", i, st)
		}
		if found := s.searchAt(pick(queries), e2); len(found) != 0 {
			t.Fatalf("round %d: stale search after DELETE: %v", i, found)
		}
	}
}

// SIGSTOP the command-svc instance that owns a profile past its session
// timeout while writes go on through the other one, then SIGCONT it: the
// appends it still attempts are rejected by Kafka, and the log stays
// consecutive.
func TestPausedOwnerIsFenced(t *testing.T) {
	const partitions = 4
	s := StartSystem(t, Options{Command: 2, Partitions: partitions})
	stale, live := "command-svc-0", "command-svc-1"
	owners := s.owners(live)
	var p profile
	for i := 0; p.UID == "" || owners[kafkax.Partition(p.UID, partitions)] != stale; i++ {
		if i == 50 {
			t.Fatalf("no profile landed on %s: %v", stale, owners)
		}
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "f", "email": fmt.Sprintf("fence%d@mail.com", i)}, nil)
		if r.Status != http.StatusCreated {
			t.Fatalf("create %d = %d: %s", i, r.Status, r.Body)
		}
		r.JSON(t, &p)
	}

	s.Pause(stale)
	paused := true
	defer func() {
		if paused {
			s.Resume(stale)
		}
	}()
	// Requests that reach the paused owner wait in its socket.
	type result struct {
		status   int
		servedBy string
		err      error
	}
	staleResults := make(chan result, 3)
	client := &http.Client{Timeout: 90 * time.Second}
	for i := range 3 {
		go func() {
			req, _ := http.NewRequest(http.MethodPut, s.URLOf(stale)+"/api/profile/"+p.UID,
				strings.NewReader(fmt.Sprintf(`{"username":"stale%d","email":%q}`, i, p.Email)))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				staleResults <- result{err: err}
				return
			}
			resp.Body.Close()
			staleResults <- result{status: resp.StatusCode, servedBy: resp.Header.Get("X-Served-By")}
		}()
	}
	// Writes go on through the live instance; they wait until it owns the
	// partition (the paused member's session expires after 6s).
	for i := range 3 {
		r := s.DoAt(live, http.MethodPut, "/api/profile/"+p.UID,
			map[string]string{"username": fmt.Sprintf("live%d", i), "email": p.Email}, nil)
		if r.Status != http.StatusOK || r.Header.Get("X-Served-By") != live {
			t.Fatalf("write %d through %s = %d by %s: %s", i, live, r.Status, r.Header.Get("X-Served-By"), r.Body)
		}
	}
	s.Resume(stale)
	paused = false

	for range 3 {
		r := <-staleResults
		// The paused instance either tried to append and was fenced, or had
		// already learned it lost the partition and forwarded the request
		// to the new owner, or served it after it got the partition back
		// and caught up. It never appended on its stale state.
		if r.err != nil {
			t.Errorf("a request held by the paused owner failed: %v", r.err)
		} else if r.status != http.StatusServiceUnavailable && r.status != http.StatusOK {
			t.Errorf("a request held by the paused owner got %d served by %s", r.status, r.servedBy)
		}
	}
	fencedAppends := s.MetricOr(stale, `profiles_command_appends_total{result="fenced"}`, 0)
	t.Logf("the paused owner's appends rejected by Kafka: %v", fencedAppends)

	// No write was based on stale state: such a write would repeat a
	// version. A write the paused instance held may still land later, on
	// current state, if it got the partition back and caught up first.
	es := eventsOf(t, s, partitions, p.UID)
	checkConsecutive(t, es)
	lastName := ""
	for _, e := range es {
		if c, ok := e.Data.(events.UsernameChanged); ok {
			lastName = c.Username
		}
	}
	var got profile
	s.Do(http.MethodGet, fmt.Sprintf("/api/profile/%s?minVersion=%d", p.UID, len(es)), nil, nil).JSON(t, &got)
	if got.Username != lastName || got.Version != int64(len(es)) {
		t.Fatalf("final state %+v after %d events (last username %s)", got, len(es), lastName)
	}
}
