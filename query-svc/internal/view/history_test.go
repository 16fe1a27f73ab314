package view_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/query-svc/internal/app"
	"profiles/query-svc/internal/view"
)

const eventLog = "profile-events"

func entry(t *testing.T, uid string, v int64, data events.Payload) view.HistoryRecord {
	t.Helper()
	e, err := app.NewHistoryEntry(events.Event{ID: "e", Type: data.EventType(), UID: uid, Version: v,
		OccurredAt: time.Unix(v, 0).UTC(), SchemaVersion: events.SchemaVersion, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	return view.HistoryRecord{UID: uid, Entry: e}
}

func summary(t *testing.T, hist []app.HistoryEntry) string {
	t.Helper()
	out := ""
	for _, e := range hist {
		c, err := json.Marshal(e.Changes)
		if err != nil {
			t.Fatal(err)
		}
		out += fmt.Sprintf("%d %s %s %d;", e.Version, e.Type, c, e.OccurredAt.Unix())
	}
	return out
}

func TestHistoryInVersionOrder(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	p := s.Partition("a")
	// Versions past 255 check that keys sort numerically, not bytewise on a
	// decimal string; a and ab share a prefix and must not mix.
	batch := []view.HistoryRecord{entry(t, "a", 1, events.ProfileCreated{Username: "bob", Email: "b@m.c"})}
	for v := int64(2); v <= 300; v++ {
		batch = append(batch, entry(t, "a", v, events.UsernameChanged{Username: fmt.Sprint("bob", v)}))
	}
	if n, err := s.ApplyEvents(eventLog, p, batch, 300); err != nil || n != 300 {
		t.Fatalf("ApplyEvents = %d, %v", n, err)
	}
	if _, err := s.ApplyEvents(eventLog, s.Partition("ab"), []view.HistoryRecord{entry(t, "ab", 1, events.ProfileCreated{Username: "x", Email: "x@m.c"})}, 1); err != nil {
		t.Fatal(err)
	}
	hist, err := s.History("a")
	if err != nil || len(hist) != 300 {
		t.Fatalf("History = %d entries, %v", len(hist), err)
	}
	for i, e := range hist {
		if e.Version != int64(i+1) {
			t.Fatalf("entry %d has version %d", i, e.Version)
		}
	}
	if got, want := summary(t, hist[:2]), `1 ProfileCreated {"email":"b@m.c","username":"bob"} 1;2 UsernameChanged {"username":"bob2"} 2;`; got != want {
		t.Fatalf("History = %s, want %s", got, want)
	}
	if off, ok, _ := s.Offset(eventLog, p); !ok || off != 300 {
		t.Fatalf("offset = %d, %v; want 300", off, ok)
	}
	if hist, err := s.History("nobody"); err != nil || hist == nil || len(hist) != 0 {
		t.Fatalf("History of an unknown uid = %v, %v; want an empty slice", hist, err)
	}
}

func TestHistoryReReadIsIdempotentAndDeleteStays(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	p := s.Partition("a")
	all := []view.HistoryRecord{
		entry(t, "a", 1, events.ProfileCreated{Username: "bob", Email: "b@m.c"}),
		entry(t, "a", 2, events.EmailChanged{Email: "c@m.c"}),
		entry(t, "a", 3, events.ProfileDeleted{}),
	}
	if _, err := s.ApplyEvents(eventLog, p, all, 3); err != nil {
		t.Fatal(err)
	}
	want := summary(t, mustHistory(t, s, "a"))
	// The partition is read again from the start, in other batches.
	for _, b := range [][]view.HistoryRecord{all[:2], all[1:]} {
		if _, err := s.ApplyEvents(eventLog, p, b, 3); err != nil {
			t.Fatal(err)
		}
	}
	if got := summary(t, mustHistory(t, s, "a")); got != want {
		t.Fatalf("after a re-read: %s, want %s", got, want)
	}
	// The delete erased the personal data of the entries before it.
	if want != `1 ProfileCreated {} 1;2 EmailChanged {} 2;3 ProfileDeleted {} 3;` {
		t.Fatalf("history = %s", want)
	}
}

func TestDropPartitionDropsHistory(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	var all []string
	for i := range 40 {
		uid := fmt.Sprintf("uid-%d", i)
		all = append(all, uid)
		if _, err := s.ApplyEvents(eventLog, s.Partition(uid), []view.HistoryRecord{entry(t, uid, 1, events.ProfileCreated{Username: "u", Email: "u@m.c"})}, 1); err != nil {
			t.Fatal(err)
		}
	}
	const gone = 1
	if err := s.DropPartition(gone); err != nil {
		t.Fatal(err)
	}
	for _, uid := range all {
		hist := mustHistory(t, s, uid)
		if inGone := kafkax.Partition(uid, parts) == gone; inGone != (len(hist) == 0) {
			t.Fatalf("%s (partition %d): %d entries after dropping partition %d", uid, kafkax.Partition(uid, parts), len(hist), gone)
		}
	}
	if _, ok, _ := s.Offset(eventLog, gone); ok {
		t.Fatal("the event log offset of the dropped partition survived")
	}
}

func mustHistory(t *testing.T, s *view.Store, uid string) []app.HistoryEntry {
	t.Helper()
	hist, err := s.History(uid)
	if err != nil {
		t.Fatal(err)
	}
	return hist
}
