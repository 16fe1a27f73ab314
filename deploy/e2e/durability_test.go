package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixture writes a mix of live, changed and deleted profiles and returns the
// state a reader must see: uid → profile, with nil for a deleted one.
func writeFixture(t *testing.T, s *System, prefix string, n int) map[string]*profile {
	t.Helper()
	return writeFixtureWith(t, s, prefix, n, nil)
}

// writeFixtureWith is writeFixture with extra request headers; with
// Prefer: respond-async the writes do not wait for readers, and the
// returned profiles have only uid, email, username and version set.
func writeFixtureWith(t *testing.T, s *System, prefix string, n int, header map[string]string) map[string]*profile {
	t.Helper()
	async := header["Prefer"] == "respond-async"
	ok := func(r Response, status int) {
		t.Helper()
		if r.Status != status && !(async && r.Status == http.StatusAccepted) {
			t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
		}
	}
	want := map[string]*profile{}
	for i := range n {
		p := profile{Username: fmt.Sprintf("user%d", i), Email: fmt.Sprintf("%s-u%d@mail.com", prefix, i), Version: 1}
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": p.Username, "email": p.Email}, header)
		ok(r, http.StatusCreated)
		r.JSON(t, &p)
		switch i % 3 {
		case 1:
			p.Username, p.Email, p.Version = fmt.Sprintf("renamed%d", i), fmt.Sprintf("%s-v%d@mail.com", prefix, i), 3
			r = s.Do(http.MethodPut, "/api/profile/"+p.UID, map[string]string{"username": p.Username, "email": p.Email}, header)
			ok(r, http.StatusOK)
			r.JSON(t, &p)
		case 2:
			ok(s.Do(http.MethodDelete, "/api/profile/"+p.UID, nil, header), http.StatusNoContent)
			want[p.UID] = nil
			continue
		}
		want[p.UID] = &p
	}
	return want
}

func checkFixture(t *testing.T, s *System, want map[string]*profile) {
	t.Helper()
	for uid, w := range want {
		path := "/api/profile/" + uid
		if w != nil {
			path += fmt.Sprintf("?minVersion=%d", w.Version)
		}
		r := s.Do(http.MethodGet, path, nil, nil)
		if w == nil {
			if r.Status != http.StatusNotFound {
				t.Fatalf("deleted %s: GET = %d %s", uid, r.Status, r.Body)
			}
			continue
		}
		var got profile
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s = %d %s", uid, r.Status, r.Body)
		}
		r.JSON(t, &got)
		if w.CreatedAt == "" { // written async: only some fields are known
			got.CreatedAt, got.UpdatedAt = "", ""
		}
		if got != *w {
			t.Fatalf("GET %s = %+v, want %+v", uid, got, *w)
		}
		if found := s.search(w.Email); len(found) != 1 || found[0] != uid {
			for _, f := range found {
				t.Logf("found %s: %s", f, s.Do(http.MethodGet, "/api/profile/"+f, nil, nil).Body)
			}
			t.Fatalf("search %s = %v, want [%s]", w.Email, found, uid)
		}
	}
}

const (
	readMetric  = "profiles_query_snapshot_records_read_total"
	stateMetric = "profiles_command_state_records_read_total"
	// restoreMetric counts the snapshots the projector read at start.
	restoreMetric = "profiles_projector_state_records_restored_total"
	// keysMetric counts the records of the keys topic a keyring read.
	keysMetric = "profiles_keyring_records_read_total"
)

// Stop every service and the broker, start them again: everything is still
// there, query-svc resumes from the offsets in its view instead of
// re-reading the snapshot topic, command-svc from the offsets in its state
// store instead of refolding the event log, and the projector from the
// offsets in its own instead of restoring the whole snapshot topic.
func TestRestartKeepsEverythingAndResumesFromStoredOffsets(t *testing.T) {
	s := StartSystem(t, Options{})
	want := writeFixture(t, s, "a", 30)
	// command-svc's keyring is lazy: it fetches the keys topic about once
	// a second (it wrote the keys it would read). Give it that second, so
	// that what it reads after the restart is a tail, not what it had not
	// fetched yet.
	time.Sleep(3 * time.Second)

	s.StopAll()
	kafkaScript(t, "stop")
	kafkaScript(t, "start")
	s.StartAll()

	if n := s.Metric("query-svc-0", readMetric); n != 0 {
		t.Fatalf("query-svc re-read %v snapshot records after a restart; want 0", n)
	}
	// The fixture is some 120 records of the event log and the claims
	// topic. The state holds the effect of every append at once, but its
	// offsets move only when the follower has read a record, so the last
	// few appends before the stop may be read again: the tail, never the
	// history.
	if n := s.Metric("command-svc-0", stateMetric); n > 10 {
		t.Fatalf("command-svc refolded %v records of the event log and the claims after a restart; want only the tail (at most 10)", n)
	}
	if n := s.Metric("projector-0", restoreMetric); n != 0 {
		t.Fatalf("the projector restored %v snapshot records after a restart; want 0", n)
	}
	// The fixture wrote some 30 keys and tombstones; each keyring
	// resumes at the offsets of its store (the last records before the
	// stop may not have been read yet). command-svc's keyring is lazy (it
	// writes the keys it reads, and fetches about once a second), so its
	// tail is up to a second of the fixture's writes.
	for name, most := range map[string]float64{"query-svc-0": 5, "command-svc-0": 15, "projector-0": 5} {
		if n := s.Metric(name, keysMetric); n > most {
			t.Errorf("the keyring of %s read %v records of the keys topic after a restart; want only the tail (at most %v)", name, n, most)
		}
	}
	checkFixture(t, s, want)
	// Its state is what it was: a change at the version it had, an email
	// that another live profile holds, and a deleted profile.
	checkStateAnswers(t, s, want)

	// And it keeps working: a new write after the restart is read at once.
	more := writeFixture(t, s, "b", 3)
	checkFixture(t, s, more)
	if n := s.Metric("query-svc-0", readMetric); n == 0 {
		t.Fatal("query-svc read nothing after new writes")
	}
}

// checkStateAnswers checks that command-svc decides on the state of
// want: a stale If-Match is refused with 412, an email that another live
// profile holds is refused with 409, a deleted profile answers 404, and a
// change at the current version succeeds.
func checkStateAnswers(t *testing.T, s *System, want map[string]*profile) {
	t.Helper()
	var live []*profile
	var deleted string
	for uid, p := range want {
		if p == nil {
			deleted = uid
		} else {
			live = append(live, p)
		}
	}
	if len(live) < 2 || deleted == "" {
		t.Fatal("the fixture needs two live profiles and a deleted one")
	}
	a, b := live[0], live[1]
	stale := map[string]string{"If-Match": fmt.Sprintf(`"%d"`, a.Version-1)}
	if r := s.Do(http.MethodPut, "/api/profile/"+a.UID, map[string]string{"username": "stale", "email": a.Email}, stale); r.Status != http.StatusPreconditionFailed {
		t.Errorf("PUT with a stale If-Match = %d %s; want 412", r.Status, r.Body)
	}
	if r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "dup", "email": b.Email}, nil); r.Status != http.StatusConflict {
		t.Errorf("POST with the email of %s = %d %s; want 409", b.UID, r.Status, r.Body)
	}
	if r := s.Do(http.MethodPut, "/api/profile/"+deleted, map[string]string{"username": "ghost", "email": "ghost@mail.com"}, nil); r.Status != http.StatusNotFound {
		t.Errorf("PUT of deleted %s = %d %s; want 404", deleted, r.Status, r.Body)
	}
	current := map[string]string{"If-Match": fmt.Sprintf(`"%d"`, a.Version)}
	r := s.Do(http.MethodPut, "/api/profile/"+a.UID, map[string]string{"username": a.Username + "x", "email": a.Email}, current)
	if r.Status != http.StatusOK {
		t.Fatalf("PUT at the current version = %d %s; want 200", r.Status, r.Body)
	}
	r.JSON(t, a)
}

// Delete query-svc's Pebble directory: it rebuilds from the snapshot topic
// and serves the same data.
func TestViewRebuildsFromSnapshotTopic(t *testing.T) {
	s := StartSystem(t, Options{})
	want := writeFixture(t, s, "a", 30)

	s.Stop("query-svc-0")
	if err := os.RemoveAll(s.DataDir("query-svc-0")); err != nil {
		t.Fatal(err)
	}
	s.Start("query-svc-0")
	s.WaitReady("query-svc-0", "frontdoor")

	// 30 creates, 10 changes (two events each) and 10 deletes: 60 snapshots,
	// fewer if the cleaner compacted some already.
	if n := s.Metric("query-svc-0", readMetric); n < 30 {
		t.Fatalf("rebuilt view read only %v records", n)
	}
	checkFixture(t, s, want)
}

// Many updates of the same profiles: the compacted snapshot topic keeps
// about one record per profile once the cleaner has run.
func TestSnapshotTopicCompacts(t *testing.T) {
	s := StartSystem(t, Options{Env: map[string]string{
		// Test-only settings that make the log cleaner run at once.
		"SNAPSHOTS_TOPIC_CONFIG": "segment.ms=100,min.cleanable.dirty.ratio=0.01,delete.retention.ms=100,min.compaction.lag.ms=0",
	}})
	const profiles, updates = 5, 30
	var uids []string
	for i := range profiles {
		var p profile
		s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "c", "email": fmt.Sprintf("c%d@mail.com", i)}, nil).JSON(t, &p)
		uids = append(uids, p.UID)
	}
	for u := range updates {
		for i, uid := range uids {
			r := s.Do(http.MethodPut, "/api/profile/"+uid, map[string]string{"username": fmt.Sprintf("name%d", u), "email": fmt.Sprintf("c%d@mail.com", i)}, nil)
			if r.Status != http.StatusOK {
				t.Fatalf("PUT = %d %s", r.Status, r.Body)
			}
		}
	}
	kc := Kafka(t)
	topic := s.env["SNAPSHOTS_TOPIC"]
	// Each write waits until it is visible before the next is sent, so the
	// projector writes each snapshot in a transaction of its own: the
	// snapshot and its commit marker, two offsets.
	written := EndOffsets(t, kc, topic) / 2
	if written != profiles*(updates+1) {
		t.Fatalf("snapshot topic has %d records written (half its offsets, the rest commit markers), want %d", written, profiles*(updates+1))
	}
	// The active segment of a partition is never cleaned: roll every one
	// with one more write per profile after segment.ms, then wait for the
	// cleaner. Each partition's new active segment then holds only these
	// final writes.
	time.Sleep(200 * time.Millisecond)
	for i, uid := range uids {
		s.Do(http.MethodPut, "/api/profile/"+uid, map[string]string{"username": "final", "email": fmt.Sprintf("c%d@mail.com", i)}, nil)
	}

	deadline := time.Now().Add(90 * time.Second)
	for {
		n := CountRecords(t, kc, topic)
		// At most one cleaned record per profile, plus the final writes.
		if n <= 2*profiles {
			t.Logf("snapshot topic compacted from %d records to %d", written+profiles, n)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot topic still holds %d of %d records after 90s", n, written+profiles)
		}
		time.Sleep(time.Second)
	}
	// Compaction lost nothing: a view rebuilt from the topic has the latest state.
	s.Stop("query-svc-0")
	if err := os.RemoveAll(s.DataDir("query-svc-0")); err != nil {
		t.Fatal(err)
	}
	s.Start("query-svc-0")
	s.WaitReady("query-svc-0", "frontdoor")
	for _, uid := range uids {
		var p profile
		s.Do(http.MethodGet, "/api/profile/"+uid, nil, nil).JSON(t, &p)
		if p.Username != "final" || p.Version != updates+2 {
			t.Fatalf("after compaction %s = %+v, want username final at version %d", uid, p, updates+2)
		}
	}
}

// A view directory from another cluster, or a corrupt one, is never
// served: query-svc empties or deletes it, says why in its log, and
// rebuilds it from Kafka.
func TestViewFromAnotherClusterOrCorruptIsRebuilt(t *testing.T) {
	needCluster(t)
	a := StartSystem(t, Options{})
	fromA := writeFixture(t, a, "a", 5)
	a.Stop("query-svc-0")

	b := StartSystem(t, Options{Brokers: clusterBrokers})
	want := writeFixture(t, b, "b", 5)
	b.Stop("query-svc-0")
	dir := b.DataDir("query-svc-0")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, os.DirFS(a.DataDir("query-svc-0"))); err != nil {
		t.Fatal(err)
	}
	b.Start("query-svc-0")
	b.WaitReady("query-svc-0", "frontdoor")
	line := logLine(t, b, "query-svc-0", "the view was built from another Kafka cluster or event log")
	if line == nil {
		t.Fatal("query-svc served a view of the single broker on the cluster without a word")
	}
	if logLine(t, b, "query-svc-0", "the keyring's store was built from another Kafka cluster") == nil {
		t.Fatal("query-svc kept the keyring's store of the single broker on the cluster without a word")
	}
	was, is := strings.Fields(fmt.Sprint(line["store_origin"])), strings.Fields(fmt.Sprint(line["origin"]))
	if len(was) != 2 || len(is) != 2 || was[0] == is[0] {
		t.Fatalf("origins in the log line: view %q, this system %q; want two different cluster ids", line["store_origin"], line["origin"])
	}
	checkFixture(t, b, want)
	for uid := range fromA {
		if r := b.Do(http.MethodGet, "/api/profile/"+uid, nil, nil); r.Status != http.StatusNotFound {
			t.Fatalf("a profile of the other cluster is served: GET %s = %d %s", uid, r.Status, r.Body)
		}
	}

	b.Stop("query-svc-0")
	manifests, err := filepath.Glob(filepath.Join(dir, "view", "MANIFEST-*"))
	if err != nil || len(manifests) == 0 {
		t.Fatalf("no MANIFEST in %s/view (%v)", dir, err)
	}
	for _, m := range manifests {
		f, err := os.OpenFile(m, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Into the first record, past its 7-byte chunk header: Pebble
		// takes a bad last record for a torn write, but not a bad first.
		if _, err := f.WriteAt([]byte("corrupt!corrupt!"), 8); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	b.Start("query-svc-0")
	b.WaitReady("query-svc-0", "frontdoor")
	if logLine(t, b, "query-svc-0", "the view is corrupt; deleting it to rebuild it from Kafka") == nil {
		t.Fatal("no log line says the corrupt view was rebuilt")
	}
	checkFixture(t, b, want)
}

// logLine returns the last JSON log line of an instance whose msg starts
// with msg, or nil.
func logLine(t *testing.T, sys *System, name, msg string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sys.dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	var found map[string]any
	for _, l := range strings.Split(string(b), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && strings.HasPrefix(fmt.Sprint(m["msg"]), msg) {
			found = m
		}
	}
	return found
}
