package view_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pebblex"
	"profiles/query-svc/internal/view"
)

const (
	snapshots = "profile-snapshots"
	index     = "profile-email-index"
	parts     = 4
)

// normalized keys an email by its normalized form, so that the tests can
// read the index keys.
type normalized struct{}

func (normalized) EmailKey(email string) string { return events.NormalizeEmail(email) }

func open(t *testing.T, fs vfs.FS) *view.Store {
	t.Helper()
	s, err := view.Open("view", fs, parts, normalized{}, view.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func profile(uid, email string, v int64) events.Profile {
	return events.Profile{UID: uid, Username: "u-" + uid, Email: email, Version: v, CreatedAt: time.Unix(1, 0).UTC(), UpdatedAt: time.Unix(1, 0).UTC()}
}

func uids(ps []events.Profile) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, p.UID)
	}
	return out
}

// put applies snapshots for the profiles (each to its uid's partition) and
// the matching index entries (each to its email's partition).
func put(t *testing.T, s *view.Store, ps ...events.Profile) {
	t.Helper()
	for _, p := range ps {
		if _, err := s.ApplySnapshots(snapshots, s.Partition(p.UID), []events.Profile{p}, 1); err != nil {
			t.Fatal(err)
		}
		email := events.NormalizeEmail(p.Email)
		if _, err := s.ApplyIndex(index, s.Partition(email), []view.IndexEntry{{Email: email, Profile: p}}, 1); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGetAndSearch(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	put(t, s, profile("a", "Bob@Mail.com", 1), profile("b", "bob@mail.com", 1))

	if got, err := s.SearchEmail(" BOB@mail.COM"); err != nil || len(got) != 2 {
		t.Fatalf("search by normalized email = %v, %v", uids(got), err)
	}
	if p, err := s.Get("a"); err != nil || p.Email != "Bob@Mail.com" {
		t.Fatalf("Get = %+v, %v", p, err)
	}
	// The email of a moves: the projector unindexes the old email.
	put(t, s, profile("a", "alice@mail.com", 2))
	if _, err := s.ApplyIndex(index, s.Partition("bob@mail.com"), []view.IndexEntry{{Email: "bob@mail.com", Profile: events.Profile{UID: "a", Version: 2, Deleted: true}}}, 2); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.SearchEmail("bob@mail.com"); len(got) != 1 || got[0].UID != "b" {
		t.Fatalf("after email change, old email finds %v", uids(got))
	}
	if e, err := s.IndexEntry("bob@mail.com", "a"); err != nil || !e.Deleted || e.Version != 2 {
		t.Fatalf("unindexed entry = %+v, %v", e, err)
	}
	if got, _ := s.SearchEmail("alice@mail.com"); len(got) != 1 || got[0].Version != 2 {
		t.Fatalf("new email finds %+v", got)
	}
	if got, _ := s.SearchEmail("nobody@mail.com"); got == nil || len(got) != 0 {
		t.Fatalf("no match must be an empty, non-nil slice: %#v", got)
	}

	// A tombstone leaves a deleted marker.
	if _, err := s.ApplySnapshots(snapshots, s.Partition("b"), []events.Profile{{UID: "b", Version: 2, Deleted: true}}, 4); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Get("b"); err != nil || !p.Deleted || p.Version != 2 || p.Exists() {
		t.Fatalf("Get(deleted) = %+v, %v", p, err)
	}
	if _, err := s.Get("never"); !errors.Is(err, view.ErrNotFound) {
		t.Fatalf("Get(unknown) error = %v, want ErrNotFound", err)
	}
}

func TestApplyIgnoresOlderRecords(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	p := s.Partition("a")
	n, err := s.ApplySnapshots(snapshots, p, []events.Profile{profile("a", "new@mail.com", 3), profile("a", "old@mail.com", 2)}, 10)
	if err != nil || n != 1 {
		t.Fatalf("applied %d, %v; want 1", n, err)
	}
	if got, _ := s.Get("a"); got.Version != 3 || got.Email != "new@mail.com" {
		t.Fatalf("Get = %+v", got)
	}
}

func TestOffsetsSurviveReopen(t *testing.T) {
	fs := vfs.NewMem()
	s := open(t, fs)
	if _, ok, _ := s.Offset(snapshots, 3); ok {
		t.Fatal("fresh view claims an offset")
	}
	if _, err := s.ApplySnapshots(snapshots, 3, nil, 42); err != nil {
		t.Fatal(err)
	}
	put(t, s, profile("a", "a@mail.com", 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, fs)
	defer s.Close()
	off, ok, err := s.Offset(snapshots, 3)
	if err != nil || !ok || off != 42 {
		t.Fatalf("Offset after reopen = %d, %v, %v", off, ok, err)
	}
	if _, ok, _ := s.Offset("other-topic", 3); ok {
		t.Fatal("offsets of another topic leak")
	}
	if p, err := s.Get("a"); err != nil || p.Email != "a@mail.com" {
		t.Fatalf("data after reopen = %+v, %v", p, err)
	}
}

func TestDropPartitionRemovesExactlyThatPartition(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	var all []events.Profile
	for i := range 40 {
		uid := string(rune('a'+i%26)) + string(rune('a'+i/26))
		all = append(all, profile(uid, uid+"@mail.com", 1))
	}
	put(t, s, all...)
	const gone = 2
	if err := s.DropPartition(gone); err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		_, err := s.Get(p.UID)
		if inGone := kafkax.Partition(p.UID, parts) == gone; inGone != errors.Is(err, view.ErrNotFound) {
			t.Fatalf("%s (partition %d): Get error %v after dropping partition %d", p.UID, kafkax.Partition(p.UID, parts), err, gone)
		}
		found, _ := s.SearchEmail(p.Email)
		if inGone := kafkax.Partition(p.Email, parts) == gone; inGone != (len(found) == 0) {
			t.Fatalf("%s: search found %v after dropping partition %d", p.Email, uids(found), gone)
		}
	}
	if n, _ := s.Count(gone); n != 0 {
		t.Fatalf("dropped partition still counts %d profiles", n)
	}
	held, err := s.Held()
	if err != nil {
		t.Fatal(err)
	}
	for topic, ps := range held {
		for _, p := range ps {
			if p == gone {
				t.Fatalf("offset of %s/%d survived the drop", topic, p)
			}
		}
	}
}

// A watch wakes at a committed batch that changes the key it watches, and
// at a dropped partition, which may change any key; no other batch wakes
// it, so that a waiting read re-reads once per change of its own key.
func TestAWatchWakesOnlyForAChangeOfItsKey(t *testing.T) {
	watchProfile := func(s *view.Store) (<-chan struct{}, func()) { return s.WatchProfile("a") }
	watchIndex := func(s *view.Store) (<-chan struct{}, func()) { return s.WatchIndexEntry(" A@Mail.com", "a") }
	watchHistory := func(s *view.Store) (<-chan struct{}, func()) { return s.WatchHistory("a") }
	snapshot := func(uid string, v int64) func(*testing.T, *view.Store) {
		return func(t *testing.T, s *view.Store) {
			if _, err := s.ApplySnapshots(snapshots, s.Partition(uid), []events.Profile{profile(uid, uid+"@mail.com", v)}, 2); err != nil {
				t.Fatal(err)
			}
		}
	}
	indexEntry := func(email, uid string) func(*testing.T, *view.Store) {
		return func(t *testing.T, s *view.Store) {
			if _, err := s.ApplyIndex(index, s.Partition(email), []view.IndexEntry{{Email: email, Profile: profile(uid, email, 3)}}, 2); err != nil {
				t.Fatal(err)
			}
		}
	}
	event := func(uid string) func(*testing.T, *view.Store) {
		return func(t *testing.T, s *view.Store) {
			if _, err := s.ApplyEvents(eventLog, s.Partition(uid), []view.HistoryRecord{entry(t, uid, 3, events.UsernameChanged{Username: "x"})}, 2); err != nil {
				t.Fatal(err)
			}
		}
	}
	drop := func(t *testing.T, s *view.Store) {
		if err := s.DropPartition((s.Partition("a") + 1) % parts); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		watch  func(*view.Store) (<-chan struct{}, func())
		change func(*testing.T, *view.Store)
		wakes  bool
	}{
		{"profile: a newer snapshot of it", watchProfile, snapshot("a", 3), true},
		{"profile: an older snapshot of it, ignored", watchProfile, snapshot("a", 1), false},
		{"profile: another profile's snapshot", watchProfile, snapshot("b", 3), false},
		{"profile: its index entry", watchProfile, indexEntry("a@mail.com", "a"), false},
		{"profile: its event", watchProfile, event("a"), false},
		{"profile: a partition dropped", watchProfile, drop, true},
		{"index: its entry", watchIndex, indexEntry("a@mail.com", "a"), true},
		{"index: another profile's entry of the email", watchIndex, indexEntry("a@mail.com", "b"), false},
		{"index: the profile's snapshot", watchIndex, snapshot("a", 3), false},
		{"history: its event", watchHistory, event("a"), true},
		{"history: another profile's event", watchHistory, event("b"), false},
		{"history: its snapshot", watchHistory, snapshot("a", 3), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, vfs.NewMem())
			defer s.Close()
			put(t, s, profile("a", "a@mail.com", 2))
			ch, unwatch := tc.watch(s)
			defer unwatch()
			tc.change(t, s)
			select {
			case <-ch:
				if !tc.wakes {
					t.Fatal("woken by a change of another key")
				}
			default:
				if tc.wakes {
					t.Fatal("not woken by a change of its key")
				}
			}
		})
	}
}

func TestOpenEmptiesAViewOfAnotherLayout(t *testing.T) {
	fs := vfs.NewMem()
	db, err := pebble.Open("view", &pebble.Options{FS: fs, FormatMajorVersion: pebblex.FormatMajorVersion})
	if err != nil {
		t.Fatal(err)
	}
	// An offset and a profile as the first layout wrote them.
	if err := db.Set([]byte("o\x00profile-snapshots\x00\x00\x00\x00\x01"), []byte{0, 0, 0, 0, 0, 0, 0, 9}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("p\x00some-uid"), []byte(`{"uid":"some-uid","version":1}`), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := open(t, fs)
	if held, _ := s.Held(); len(held) != 0 {
		t.Fatalf("old offsets survived: %v", held)
	}
	// Reopening a view of the current layout keeps it.
	put(t, s, profile("a", "a@mail.com", 1))
	s.Close()
	s = open(t, fs)
	defer s.Close()
	if _, err := s.Get("a"); err != nil {
		t.Fatalf("data of the current layout lost on reopen: %v", err)
	}
}

func TestOpenEmptiesAViewOfAnotherOrigin(t *testing.T) {
	fs := vfs.NewMem()
	openAt := func(origin string) *view.Store {
		t.Helper()
		s, err := view.Open("view", fs, parts, normalized{}, view.Options{Origin: origin})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// A view from a build that recorded no origin takes the first one.
	s := open(t, fs)
	put(t, s, profile("a", "a@mail.com", 1))
	s.Close()
	for _, step := range []struct {
		origin string
		kept   bool
	}{
		{"cluster-1 events", true},  // adopted
		{"cluster-1 events", true},  // the same origin again
		{"cluster-2 events", false}, // another cluster: emptied
		{"cluster-2 other", false},  // another event log: emptied
	} {
		s := openAt(step.origin)
		_, err := s.Get("a")
		if kept := err == nil; kept != step.kept {
			t.Fatalf("origin %q: profile kept = %v (err %v), want %v", step.origin, kept, err, step.kept)
		}
		if held, _ := s.Held(); !step.kept && len(held) != 0 {
			t.Fatalf("origin %q: offsets survived: %v", step.origin, held)
		}
		put(t, s, profile("a", "a@mail.com", 1))
		s.Close()
	}
}

func TestOpenRebuildsACorruptView(t *testing.T) {
	fs := vfs.NewMem()
	s := open(t, fs)
	put(t, s, profile("a", "a@mail.com", 1))
	s.Close()
	names, err := fs.List("view")
	if err != nil {
		t.Fatal(err)
	}
	corrupted := 0
	for _, name := range names {
		if len(name) < 8 || name[:8] != "MANIFEST" {
			continue
		}
		// Overwrite the first record past its 7-byte chunk header: its
		// checksum no longer matches. (Pebble takes a bad last record
		// for a torn write, and reads on without it.)
		path := fs.PathJoin("view", name)
		f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("corrupt!corrupt!"), 8); err != nil {
			t.Fatal(err)
		}
		f.Close()
		corrupted++
	}
	if corrupted == 0 {
		t.Fatalf("no MANIFEST among %v", names)
	}
	s, err = view.Open("view", fs, parts, normalized{}, view.Options{})
	if err != nil {
		t.Fatalf("a corrupt view is not rebuilt: %v", err)
	}
	defer s.Close()
	if _, err := s.Get("a"); !errors.Is(err, view.ErrNotFound) {
		t.Fatalf("Get from the rebuilt view = %v, want ErrNotFound", err)
	}
	if held, _ := s.Held(); len(held) != 0 {
		t.Fatalf("the rebuilt view holds offsets: %v", held)
	}
}

// Below its reserve of free space the view refuses a batch whole: no
// profile and no offset is written, so the batch is read again, not
// skipped. (Pebble would end the process on a write that finds the disk
// full.)
func TestApplyRefusesBelowTheReserve(t *testing.T) {
	dir := t.TempDir()
	free, err := pebblex.FreeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := view.Open(dir+"/view", vfs.Default, parts, normalized{}, view.Options{Reserve: free + 1<<40})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := events.Profile{UID: "u1", Username: "a", Email: "a@x.com", Version: 1}
	if _, err := s.ApplySnapshots("snaps", 0, []events.Profile{p}, 7); !errors.Is(err, pebblex.ErrDiskFull) {
		t.Fatalf("apply below the reserve: %v, want ErrDiskFull", err)
	}
	if _, ok, err := s.Offset("snaps", 0); err != nil || ok {
		t.Fatalf("the offset moved on a refused batch: %v %v", ok, err)
	}
	if _, err := s.Get("u1"); !errors.Is(err, view.ErrNotFound) {
		t.Fatalf("a refused batch's profile is readable: %v", err)
	}
}
