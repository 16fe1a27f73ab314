package e2e

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"profiles/platform/kafkax"
)

// historyBody is the body of GET /api/profile/{uid}/history.
type historyBody struct {
	UID    string `json:"uid"`
	Events []struct {
		Type       string            `json:"type"`
		Version    int64             `json:"version"`
		OccurredAt time.Time         `json:"occurredAt"`
		Changes    map[string]string `json:"changes"`
		Erased     bool              `json:"erased"`
	} `json:"events"`
}

// historyFlow creates a profile, changes its username, then its email, then
// deletes it, and returns its uid.
func historyFlow(t *testing.T, s *System, name string) string {
	t.Helper()
	var p struct {
		UID string `json:"uid"`
	}
	r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": name, "email": name + "-1@mail.com"}, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.Status, r.Body)
	}
	r.JSON(t, &p)
	for _, body := range []map[string]string{
		{"username": name + "-renamed", "email": name + "-1@mail.com"},
		{"username": name + "-renamed", "email": name + "-2@mail.com"},
	} {
		if r := s.Do(http.MethodPut, "/api/profile/"+p.UID, body, nil); r.Status != http.StatusOK {
			t.Fatalf("PUT %v = %d %s", body, r.Status, r.Body)
		}
	}
	if r := s.Do(http.MethodDelete, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", r.Status, r.Body)
	}
	return p.UID
}

// checkHistory asserts that h is the history historyFlow wrote: its four
// events, in order, each erased but the delete: the delete crypto-shredded
// the personal data they set (see TestForgettingLeavesOnlyCiphertextAndTombstones
// for a history before the delete).
func checkHistory(t *testing.T, h historyBody, uid, name string) {
	t.Helper()
	if h.UID != uid || len(h.Events) != 4 {
		t.Fatalf("history of %s = %+v, want 4 events", uid, h)
	}
	want := []struct {
		typ     string
		changes map[string]string
		erased  bool
	}{
		{"ProfileCreated", map[string]string{}, true},
		{"UsernameChanged", map[string]string{}, true},
		{"EmailChanged", map[string]string{}, true},
		{"ProfileDeleted", map[string]string{}, false},
	}
	for i, e := range h.Events {
		if e.Type != want[i].typ || e.Version != int64(i+1) || !reflect.DeepEqual(e.Changes, want[i].changes) || e.Erased != want[i].erased {
			t.Errorf("event %d = %+v, want %s v%d %v erased %v", i, e, want[i].typ, i+1, want[i].changes, want[i].erased)
		}
		for _, v := range e.Changes {
			if strings.Contains(v, name) {
				t.Errorf("event %d of a deleted profile shows %q", i, v)
			}
		}
		if e.OccurredAt.IsZero() || (i > 0 && e.OccurredAt.Before(h.Events[i-1].OccurredAt)) {
			t.Errorf("event %d occurred at %v, after %v", i, e.OccurredAt, h.Events[max(i-1, 0)].OccurredAt)
		}
	}
}

// The scenario: create a profile, change it, delete it; its
// history lists those events in order, through the front door and through
// an instance that does not own the uid's partition (forwarded once). The
// history of the deleted profile stays readable; GET of the profile is
// 404. An unknown uid is 404, a malformed one 400, both problem+json.
func TestHistoryOfCreateChangeDelete(t *testing.T) {
	const partitions = 6
	s := StartSystem(t, Options{Query: 3, Partitions: partitions})
	uid := historyFlow(t, s, "hist")

	// A write waits for GET and search, not for the history: minVersion
	// reads the delete.
	r := s.Do(http.MethodGet, "/api/profile/"+uid+"/history?minVersion=4", nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("history = %d %s", r.Status, r.Body)
	}
	var h historyBody
	r.JSON(t, &h)
	checkHistory(t, h, uid, "hist")
	if r := s.Do(http.MethodGet, "/api/profile/"+uid, nil, nil); r.Status != http.StatusNotFound {
		t.Fatalf("GET of the deleted profile = %d %s", r.Status, r.Body)
	}

	owner := s.owners(s.Instances("query-svc")[0])[kafkax.Partition(uid, partitions)]
	for _, via := range s.Instances("query-svc") {
		r := s.DoAt(via, http.MethodGet, "/api/profile/"+uid+"/history", nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("history via %s = %d %s", via, r.Status, r.Body)
		}
		wantHops := "0"
		if via != owner {
			wantHops = "1"
		}
		if by, hops := r.Header.Get("X-Served-By"), r.Header.Get("X-Profiles-Hops"); by != owner || hops != wantHops {
			t.Fatalf("history via %s served by %s in %s hops; the owner is %s", via, by, hops, owner)
		}
		var got historyBody
		r.JSON(t, &got)
		checkHistory(t, got, uid, "hist")
	}

	for path, status := range map[string]int{
		"/api/profile/8b0a4c44-6f3e-4d57-9d53-0b8f8e1c2a10/history": http.StatusNotFound,
		"/api/profile/not-a-uid/history":                            http.StatusBadRequest,
		"/api/profile/" + uid + "/history?minVersion=x":             http.StatusBadRequest,
	} {
		r := s.Do(http.MethodGet, path, nil, nil)
		if r.Status != status || r.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s = %d %s %s, want %d problem+json", path, r.Status, r.Header.Get("Content-Type"), r.Body, status)
		}
	}
	var problem struct {
		Type string `json:"type"`
	}
	s.Do(http.MethodGet, "/api/profile/8b0a4c44-6f3e-4d57-9d53-0b8f8e1c2a10/history", nil, nil).JSON(t, &problem)
	if problem.Type != "urn:profiles:problem:profile-not-found" {
		t.Fatalf("unknown uid: problem type %q", problem.Type)
	}

	// The owner restarts with its view kept: it resumes the event log from
	// its stored offset (nothing to re-read; the end it waits for counts
	// the transaction markers) and still serves the whole history.
	s.Stop(owner)
	s.Start(owner)
	s.WaitReady(owner)
	if n := s.Metric(owner, "profiles_query_events_read_total"); n != 0 {
		t.Fatalf("%s re-read %v events after a restart; want 0", owner, n)
	}
	r = s.DoAt(owner, http.MethodGet, "/api/profile/"+uid+"/history", nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("history after restart = %d %s", r.Status, r.Body)
	}
	h = historyBody{}
	r.JSON(t, &h)
	checkHistory(t, h, uid, "hist")
}

// Full-replica mode: every instance serves the history itself, and an
// instance restarted with its view becomes ready again (the event log's
// transaction markers do not hold up its catch-up).
func TestHistoryInFullReplicaMode(t *testing.T) {
	s := StartSystem(t, Options{Query: 2, Partitions: 4, Env: map[string]string{"REPLICA_MODE": "full", "QUERY_WAIT_ALL": "true"}})
	uids := map[string]string{}
	for i := range 3 {
		name := fmt.Sprintf("full%d", i)
		uids[name] = historyFlow(t, s, name)
	}
	check := func() {
		t.Helper()
		for _, q := range s.Instances("query-svc") {
			for name, uid := range uids {
				r := s.DoAt(q, http.MethodGet, "/api/profile/"+uid+"/history?minVersion=4", nil, nil)
				if r.Status != http.StatusOK {
					t.Fatalf("history via %s = %d %s", q, r.Status, r.Body)
				}
				if by, hops := r.Header.Get("X-Served-By"), r.Header.Get("X-Profiles-Hops"); by != q || hops != "0" {
					t.Fatalf("history via %s served by %s in %s hops", q, by, hops)
				}
				var h historyBody
				r.JSON(t, &h)
				checkHistory(t, h, uid, name)
			}
		}
	}
	check()
	restarted := s.Instances("query-svc")[1]
	s.Stop(restarted)
	s.Start(restarted)
	s.WaitReady(restarted)
	check()
}
