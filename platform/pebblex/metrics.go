package pebblex

import (
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// The metrics of every store this process opened with Open, summed by
// store (its Layout: the view, a state, the keyring's store), read from
// pebble's DB.Metrics at each scrape. A store that was closed since is
// dropped at the next scrape.
var (
	diskBytes = prometheus.NewDesc("profiles_pebble_disk_bytes",
		"Disk space the store uses (WAL, live, obsolete and zombie tables), by store.", []string{"store"}, nil)
	cacheBytes = prometheus.NewDesc("profiles_pebble_block_cache_bytes",
		"Bytes in the store's block cache, by store.", []string{"store"}, nil)
	cacheHits = prometheus.NewDesc("profiles_pebble_block_cache_hits_total",
		"Block cache hits, by store; the hit rate is rate(hits) / (rate(hits) + rate(misses)).", []string{"store"}, nil)
	cacheMisses = prometheus.NewDesc("profiles_pebble_block_cache_misses_total",
		"Block cache misses, by store.", []string{"store"}, nil)
	memtableBytes = prometheus.NewDesc("profiles_pebble_memtable_bytes",
		"Bytes allocated by the store's memtables and large batches, the ones waiting to be flushed included, by store.", []string{"store"}, nil)
	filterSkips = prometheus.NewDesc("profiles_pebble_filter_skips_total",
		"Table reads that a Bloom filter saved, by store: lookups of a key that a table does not hold, which the filter ruled out without reading the table's blocks.", []string{"store"}, nil)
	filterMisses = prometheus.NewDesc("profiles_pebble_filter_misses_total",
		"Lookups that a table's Bloom filter let through, by store: the key may be in the table, whose blocks are then read.", []string{"store"}, nil)
	zombieBytes = prometheus.NewDesc("profiles_pebble_memtable_zombie_bytes",
		"Bytes of memtables the store no longer uses that an open iterator still holds (or one waiting to be recycled), by store: growth means an iterator that is not closed.", []string{"store"}, nil)
)

type storeMetrics struct {
	mu  sync.Mutex
	dbs map[*pebble.DB]string
}

var stores = func() *storeMetrics {
	s := &storeMetrics{dbs: map[*pebble.DB]string{}}
	prometheus.MustRegister(s)
	return s
}()

func (s *storeMetrics) add(db *pebble.DB, store string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dbs[db] = store
}

func (s *storeMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{diskBytes, cacheBytes, cacheHits, cacheMisses, filterSkips, filterMisses, memtableBytes, zombieBytes} {
		ch <- d
	}
}

// metricsOf returns db's metrics, or nil once db is closed. Metrics does
// not tell, but EstimateDiskUsage (of an empty range: it reads nothing)
// panics on a closed DB.
func metricsOf(db *pebble.DB) (m *pebble.Metrics) {
	defer func() {
		if recover() != nil {
			m = nil
		}
	}()
	_, _ = db.EstimateDiskUsage([]byte{0}, []byte{0})
	return db.Metrics()
}

func (s *storeMetrics) Collect(ch chan<- prometheus.Metric) {
	type sums struct{ disk, cache, hits, misses, skips, passes, memtables, zombies float64 }
	by := map[string]*sums{}
	s.mu.Lock()
	dbs := make(map[*pebble.DB]string, len(s.dbs))
	for db, store := range s.dbs {
		dbs[db] = store
	}
	s.mu.Unlock()
	for db, store := range dbs {
		m := metricsOf(db)
		if m == nil {
			s.mu.Lock()
			delete(s.dbs, db)
			s.mu.Unlock()
			continue
		}
		t := by[store]
		if t == nil {
			t = &sums{}
			by[store] = t
		}
		t.disk += float64(m.DiskSpaceUsage())
		t.cache += float64(m.BlockCache.Size)
		t.hits += float64(m.BlockCache.Hits)
		t.misses += float64(m.BlockCache.Misses)
		t.skips += float64(m.Filter.Hits)
		t.passes += float64(m.Filter.Misses)
		t.memtables += float64(m.MemTable.Size)
		t.zombies += float64(m.MemTable.ZombieSize)
	}
	for store, t := range by {
		ch <- prometheus.MustNewConstMetric(diskBytes, prometheus.GaugeValue, t.disk, store)
		ch <- prometheus.MustNewConstMetric(cacheBytes, prometheus.GaugeValue, t.cache, store)
		ch <- prometheus.MustNewConstMetric(cacheHits, prometheus.CounterValue, t.hits, store)
		ch <- prometheus.MustNewConstMetric(cacheMisses, prometheus.CounterValue, t.misses, store)
		ch <- prometheus.MustNewConstMetric(filterSkips, prometheus.CounterValue, t.skips, store)
		ch <- prometheus.MustNewConstMetric(filterMisses, prometheus.CounterValue, t.passes, store)
		ch <- prometheus.MustNewConstMetric(memtableBytes, prometheus.GaugeValue, t.memtables, store)
		ch <- prometheus.MustNewConstMetric(zombieBytes, prometheus.GaugeValue, t.zombies, store)
	}
}
