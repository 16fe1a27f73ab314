package projector

import (
	"strconv"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/platform/pebblex"
	"profiles/platform/pii"
)

// clearCodec opens snapshots written in clear.
func clearCodec(t *testing.T) *pii.Codec {
	t.Helper()
	kek, err := pii.NewKEK(make([]byte, pii.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return pii.NewCodec(kek, nil)
}

// snapshot is the record the projector writes for p.
func snapshot(t *testing.T, p events.Profile) Snapshot {
	t.Helper()
	s := Snapshot{UID: p.UID, Version: p.Version, VersionHeader: strconv.FormatInt(p.Version, 10)}
	if !p.Deleted {
		v, err := events.EncodeSnapshot(p)
		if err != nil {
			t.Fatal(err)
		}
		s.Value = v
	}
	return s
}

func TestStateKeepsTheLatestVersionAndMovesOffsetsForward(t *testing.T) {
	s := newState(t, "snaps", clearCodec(t))
	two := events.Profile{UID: "a", Version: 2, Username: "two", Email: "a@b.c"}
	for _, put := range []struct {
		snaps   []Snapshot
		offsets map[int32]int64
	}{
		{[]Snapshot{snapshot(t, two), snapshot(t, events.Profile{UID: "b", Version: 1, Username: "b"})}, map[int32]int64{0: 10, 1: 4}},
		{[]Snapshot{snapshot(t, events.Profile{UID: "a", Version: 1, Username: "one"})}, map[int32]int64{0: 7}}, // older: ignored
		{[]Snapshot{snapshot(t, events.Profile{UID: "b", Version: 2, Deleted: true})}, map[int32]int64{1: 5}},
	} {
		if err := s.Put(put.snaps, put.offsets); err != nil {
			t.Fatal(err)
		}
	}
	if got := getState(t, s, "a"); got.Version != 2 || got.Username != "two" || got.Email != "a@b.c" {
		t.Errorf("a = %+v; want %+v", got, two)
	}
	if got := getState(t, s, "b"); got.Version != 2 || !got.Deleted {
		t.Errorf("b = %+v; want deleted at version 2", got)
	}
	if got := getState(t, s, "c"); got.Version != 0 {
		t.Errorf("a profile never put = %+v", got)
	}
	for p, want := range map[int32]int64{0: 10, 1: 5} {
		if off, ok, err := pebblex.Offset(s.db, "snaps", p); err != nil || !ok || off != want {
			t.Errorf("offset of partition %d = %d %v %v; want %d", p, off, ok, err, want)
		}
	}
	if n, err := s.Len(); err != nil || n != 2 {
		t.Errorf("Len = %d, %v; want 2", n, err)
	}
}

// A stored record that does not decode is no state the projector wrote:
// it reads as unknown, as Restore skipped such records.
func TestUndecodableSnapshotIsUnknown(t *testing.T) {
	s := newState(t, "snaps", clearCodec(t))
	if err := s.Put([]Snapshot{{UID: "a", Version: 3, Value: []byte("{not json"), VersionHeader: "3"}}, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get("a"); err != nil || got.Version != 0 {
		t.Fatalf("Get = %+v, %v; want the zero profile", got, err)
	}
}

// A new snapshot generation starts from an empty state, and the store
// keeps nothing of the generation before.
func TestOpenStateDropsOtherTopics(t *testing.T) {
	codec := clearCodec(t)
	db, err := pebblex.Open("state", vfs.NewMem(), pebblex.Options{What: "the projector's state", Layout: StateLayout})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old, err := OpenState(db, "snaps-1", codec)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Put([]Snapshot{snapshot(t, events.Profile{UID: "a", Version: 1})}, map[int32]int64{0: 3}); err != nil {
		t.Fatal(err)
	}
	// Opened again for the same topic (a restart), it keeps its own.
	again, err := OpenState(db, "snaps-1", codec)
	if err != nil {
		t.Fatal(err)
	}
	if got := getState(t, again, "a"); got.Version != 1 {
		t.Errorf("the state of the same topic after a reopen = %+v", got)
	}
	cur, err := OpenState(db, "snaps-2", codec)
	if err != nil {
		t.Fatal(err)
	}
	if got := getState(t, cur, "a"); got.Version != 0 {
		t.Errorf("the new generation's state has %+v", got)
	}
	if got := getState(t, old, "a"); got.Version != 0 {
		t.Errorf("the old generation's state survived: %+v", got)
	}
	held, err := pebblex.Held(db)
	if err != nil || len(held) != 0 {
		t.Errorf("offsets left: %v %v", held, err)
	}
}
