package projector

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/platform/pebblex"
)

func TestStateKeepsTheLatestVersionAndMovesOffsetsForward(t *testing.T) {
	s := newState(t, "snaps")
	for _, put := range []struct {
		profiles []events.Profile
		offsets  map[int32]int64
	}{
		{[]events.Profile{{UID: "a", Version: 2, Username: "two"}, {UID: "b", Version: 1}}, map[int32]int64{0: 10, 1: 4}},
		{[]events.Profile{{UID: "a", Version: 1, Username: "one"}}, map[int32]int64{0: 7}}, // older: ignored
		{[]events.Profile{{UID: "b", Version: 2, Deleted: true, Sealed: true}}, map[int32]int64{1: 5}},
	} {
		if err := s.Put(put.profiles, put.offsets); err != nil {
			t.Fatal(err)
		}
	}
	if got := getState(t, s, "a"); got.Version != 2 || got.Username != "two" {
		t.Errorf("a = %+v; want version 2", got)
	}
	if got := getState(t, s, "b"); got.Version != 2 || !got.Deleted || !got.Sealed {
		t.Errorf("b = %+v; want deleted and sealed at version 2", got)
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

// A new snapshot generation starts from an empty state, and the store
// keeps nothing of the generation before.
func TestOpenStateDropsOtherTopics(t *testing.T) {
	fs := vfs.NewMem()
	db, err := pebblex.Open("state", fs, pebblex.Options{What: "the projector's state", Layout: StateLayout})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old, err := OpenState(db, "snaps-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Put([]events.Profile{{UID: "a", Version: 1}}, map[int32]int64{0: 3}); err != nil {
		t.Fatal(err)
	}
	// Opened again for the same topic (a restart), it keeps its own.
	again, err := OpenState(db, "snaps-1")
	if err != nil {
		t.Fatal(err)
	}
	if got := getState(t, again, "a"); got.Version != 1 {
		t.Errorf("the state of the same topic after a reopen = %+v", got)
	}
	cur, err := OpenState(db, "snaps-2")
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
