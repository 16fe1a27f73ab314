package pebblex

import (
	"reflect"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Offsets lists one topic's offsets only, even where another topic's name
// starts with it, and Offset and Held agree with it.
func TestOffsetsOfATopic(t *testing.T) {
	db, err := Open("db", vfs.NewMem(), Options{What: "the test store", Store: "offsets_test", Layout: "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := db.NewBatch()
	for _, o := range []struct {
		topic string
		p     int32
		next  int64
	}{{"events", 0, 12}, {"events", 11, 1 << 40}, {"events-2", 0, 3}, {"claims", 5, 7}} {
		if err := SetOffset(b, o.topic, o.p, o.next); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	got, err := Offsets(db, "events")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[int32]int64{0: 12, 11: 1 << 40}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Offsets(events) = %v, want %v", got, want)
	}
	if got, err := Offsets(db, "nothing"); err != nil || len(got) != 0 {
		t.Fatalf("Offsets of a topic the store has nothing of = %v, %v", got, err)
	}
	if off, ok, err := Offset(db, "events", 11); err != nil || !ok || off != 1<<40 {
		t.Fatalf("Offset(events, 11) = %d %v %v", off, ok, err)
	}
	held, err := Held(db)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string][]int32{"events": {0, 11}, "events-2": {0}, "claims": {5}}; !reflect.DeepEqual(held, want) {
		t.Fatalf("Held = %v, want %v", held, want)
	}
}
