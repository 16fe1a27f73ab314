package pebblex

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Every table a store writes carries a Bloom filter, so that looking up a
// key the table does not hold reads none of its blocks.
func TestTablesCarryBloomFilters(t *testing.T) {
	db, err := Open("db", vfs.NewMem(), Options{What: "the test store", Store: "bloom_test", Layout: "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := db.NewBatch()
	for i := range 10_000 {
		if err := b.Set(fmt.Appendf(nil, "uid/%08d", i), []byte("v"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	levels, err := db.SSTables(pebble.WithProperties())
	if err != nil {
		t.Fatal(err)
	}
	tables := 0
	for level, ts := range levels {
		for i, tab := range ts {
			tables++
			if got := tab.Properties.FilterPolicyName; got != "rocksdb.BuiltinBloomFilter" {
				t.Errorf("table %d of L%d: filter policy %q, want the Bloom filter", i, level, got)
			}
		}
	}
	if tables == 0 {
		t.Fatal("the flush wrote no table")
	}

	before := db.Metrics().Filter
	const absent = 1000
	for i := range absent {
		// Between two keys of the table, so that its range does not rule
		// the key out before its filter does.
		if v, err := Get(db, fmt.Appendf(nil, "uid/%08dx", i)); v != nil || err != nil {
			t.Fatalf("absent key %d: %q, %v", i, v, err)
		}
	}
	if v, err := Get(db, []byte("uid/00004242")); v == nil || err != nil {
		t.Fatalf("present key: %q, %v", v, err)
	}
	after := db.Metrics().Filter
	// 10 bits a key: about 1% false positives; 5% leaves room for chance.
	if skips := after.Hits - before.Hits; skips < absent*95/100 {
		t.Fatalf("the filters ruled out %d of %d lookups of absent keys (metrics %+v → %+v)", skips, absent, before, after)
	}
	if after.Misses == before.Misses {
		t.Fatalf("the lookup of a present key passed no filter (metrics %+v → %+v)", before, after)
	}
}
