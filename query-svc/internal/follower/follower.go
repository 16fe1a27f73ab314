// Package follower keeps query-svc's view in step with the snapshot topic.
package follower

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/events"
	"profiles/platform/kafkax"
)

var (
	recordsRead = promauto.NewCounter(prometheus.CounterOpts{
		Name: "profiles_query_snapshot_records_read_total",
		Help: "Snapshot records read from Kafka since the process started (after a cheap restart it stays at the number of new records).",
	})
	recordsSkipped = promauto.NewCounter(prometheus.CounterOpts{
		Name: "profiles_query_snapshot_records_poison_total",
		Help: "Snapshot records that could not be decoded and were skipped.",
	})
	partitionsBehind = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "profiles_query_partitions_catching_up",
		Help: "Partitions that have not yet caught up with the high-water mark they had at start.",
	})
)

// Store is what the follower needs of the view.
type Store interface {
	Offset(topic string, p int32) (int64, bool, error)
	Apply(topic string, p int32, profiles []events.Profile, next int64) (int, error)
}

// Follower applies every record of the snapshot topic to the view, starting
// each partition at the offset stored in the view (or at the beginning when
// the view holds nothing of it). Use New; Run once.
type Follower struct {
	client sarama.Client
	topic  string
	store  Store
	log    *slog.Logger

	mu       sync.Mutex
	behind   map[int32]bool
	started  bool
	reRead   atomic.Int64 // records read before each partition caught up
	caughtUp atomic.Bool
}

// New returns a follower of topic into store.
func New(client sarama.Client, topic string, store Store, log *slog.Logger) *Follower {
	return &Follower{client: client, topic: topic, store: store, log: log, behind: map[int32]bool{}}
}

// Ready reports nil once every partition has caught up with the high-water
// mark it had when Run started.
func (f *Follower) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case !f.started:
		return fmt.Errorf("not started")
	case len(f.behind) > 0:
		return fmt.Errorf("%d partitions of %s catching up", len(f.behind), f.topic)
	}
	return nil
}

// Run follows the topic until ctx ends.
func (f *Follower) Run(ctx context.Context) error {
	parts, err := f.client.Partitions(f.topic)
	if err != nil {
		return fmt.Errorf("partitions of %s: %w", f.topic, err)
	}
	f.mu.Lock()
	for _, p := range parts {
		f.behind[p] = true
	}
	f.started = true
	partitionsBehind.Set(float64(len(parts)))
	f.mu.Unlock()

	return kafkax.Read(ctx, f.client, kafkax.ReadOptions{
		Topic:      f.topic,
		Partitions: parts,
		Start:      f.start,
		Handle:     f.handle,
		CaughtUp:   f.partitionCaughtUp,
	})
}

func (f *Follower) start(p int32) (int64, error) {
	off, ok, err := f.store.Offset(f.topic, p)
	if err != nil {
		return 0, err
	}
	if !ok {
		f.log.Info("view has no data of partition; reading it from the start", "topic", f.topic, "partition", p)
		return sarama.OffsetOldest, nil
	}
	f.log.Debug("resuming partition from the offset stored in the view", "topic", f.topic, "partition", p, "offset", off)
	return off, nil
}

func (f *Follower) handle(_ context.Context, p int32, records []*sarama.ConsumerMessage) error {
	profiles := make([]events.Profile, 0, len(records))
	for _, r := range records {
		prof, err := decode(r)
		if err != nil {
			recordsSkipped.Inc()
			f.log.Error("skipping undecodable snapshot record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
			continue
		}
		profiles = append(profiles, prof)
	}
	if _, err := f.store.Apply(f.topic, p, profiles, records[len(records)-1].Offset+1); err != nil {
		return err
	}
	recordsRead.Add(float64(len(records)))
	if !f.caughtUp.Load() {
		f.reRead.Add(int64(len(records)))
	}
	return nil
}

func decode(r *sarama.ConsumerMessage) (events.Profile, error) {
	return events.DecodeSnapshot(string(r.Key), r.Value, kafkax.HeaderValue(r, events.HeaderVersion))
}

func (f *Follower) partitionCaughtUp(p int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.behind, p)
	partitionsBehind.Set(float64(len(f.behind)))
	if len(f.behind) == 0 && !f.caughtUp.Swap(true) {
		f.log.Info("view caught up with the snapshot topic", "topic", f.topic, "records_read_to_catch_up", f.reRead.Load())
	}
}
