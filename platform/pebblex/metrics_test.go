package pebblex

import (
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// An open store's size and block cache are exported under its name, and
// a closed one is dropped.
func TestStoreMetrics(t *testing.T) {
	db, err := Open("db", vfs.NewMem(), Options{What: "the test store", Store: "metrics_test", Layout: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("k"), []byte("v"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := Get(db, []byte("k")); err != nil {
			t.Fatal(err)
		}
	}
	const want = `profiles_pebble_block_cache_hits_total{store="metrics_test"}`
	text := scrape(t)
	for _, name := range metricNames {
		if !strings.Contains(text, name+`{store="metrics_test"}`) {
			t.Errorf("%s of the store not exported:\n%s", name, text)
		}
	}
	if !strings.Contains(text, want) {
		t.Fatal(text)
	}
	if n := testutil.CollectAndCount(stores, "profiles_pebble_disk_bytes"); n < 1 {
		t.Fatalf("%d disk series", n)
	}
	db.Close()
	if text := scrape(t); strings.Contains(text, `store="metrics_test"`) {
		t.Fatalf("a closed store is still exported:\n%s", text)
	}
}

var metricNames = []string{"profiles_pebble_disk_bytes", "profiles_pebble_block_cache_bytes", "profiles_pebble_block_cache_hits_total",
	"profiles_pebble_block_cache_misses_total", "profiles_pebble_filter_skips_total", "profiles_pebble_filter_misses_total", "profiles_pebble_memtable_bytes", "profiles_pebble_memtable_zombie_bytes"}

func scrape(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, name := range metricNames {
		if err := testutil.CollectAndCompare(stores, strings.NewReader(""), name); err != nil {
			b.WriteString(err.Error())
		}
	}
	return b.String()
}
