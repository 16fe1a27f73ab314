// Package replicator feeds other systems from our topics: it follows the
// current generation's snapshot topic (and, for sinks that need history,
// the event log) and hands each partition's records, in order and in
// batches, to a Sink, which stores them together with the position they
// reach. A sink is just one more projection.
//
// The position is the sink's own, written atomically with the data it
// covers (in the same Kafka transaction on a target cluster, in the same
// PostgreSQL transaction), so a replicator killed at any point resumes
// exactly where the data it delivered ends: no gap, and nothing applied
// twice.
package replicator

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/platform/kafkax"
	"profiles/platform/topology"
)

var (
	recordsReplicated = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "profiles_replicator_records_total",
		Help: "Records delivered to the sink, by sink and source topic.",
	}, []string{"sink", "topic"})
	lag = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "profiles_replicator_lag_records",
		Help: "Records in the source topic that the sink has not stored yet, by sink and source topic (sampled every few seconds).",
	}, []string{"sink", "topic"})
)

// Sink stores batches of source records. Write is called with the records
// of one source partition in offset order, and next, the offset after the
// batch; it must store both atomically, so that Position returns next
// afterwards, even after a crash. Calls for different partitions may run
// concurrently.
type Sink interface {
	// Name labels the sink in metrics and logs ("kafka", "postgres").
	Name() string
	// Position returns the next offset to read from topic/p, and false if
	// the sink has stored nothing of it.
	Position(ctx context.Context, topic string, p int32) (int64, bool, error)
	Write(ctx context.Context, topic string, p int32, records []*sarama.ConsumerMessage, next int64) error
}

// Source chooses what to replicate.
type Source struct {
	// Snapshots replicates the current generation's snapshot topic.
	Snapshots bool
	// Events also replicates the event log.
	Events bool
}

// Replicator follows the source topics and feeds the sink. Use Run.
type Replicator struct {
	Client sarama.Client
	Kafka  topology.Config
	Source Source
	Sink   Sink
	Log    *slog.Logger
	// LagEvery is how often lag is sampled; 0 means five seconds.
	LagEvery time.Duration

	mu    sync.Mutex
	ready bool
}

// Ready reports nil once the replicator has caught up with the end every
// source partition had when it started.
func (r *Replicator) Ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ready {
		return fmt.Errorf("replicator catching up")
	}
	return nil
}

// Topics returns the source topics of generation n.
func (r *Replicator) Topics(n int) []string {
	var out []string
	if r.Source.Snapshots {
		out = append(out, r.Kafka.ForGeneration(n).SnapshotsTopic)
	}
	if r.Source.Events {
		out = append(out, r.Kafka.EventsTopic)
	}
	return out
}

// Run replicates until ctx ends or the sink fails. At a switch of the
// snapshot generation it moves to the new generation's snapshot topic,
// from its start (the sink's positions are per topic), which re-delivers
// the whole current state: harmless for a sink that applies by key and
// version.
func (r *Replicator) Run(ctx context.Context) error {
	return topology.FollowGenerations(ctx, r.Client, r.Kafka.ControlTopic, r.Log, func(ctx context.Context, n int, ready func()) error {
		ready()
		topics := r.Topics(n)
		behind := 0
		for _, t := range topics {
			parts, err := r.Client.Partitions(t)
			if err != nil {
				return err
			}
			behind += len(parts)
		}
		r.mu.Lock()
		r.ready = behind == 0
		r.mu.Unlock()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go r.sampleLag(ctx, topics)
		// One consumer for every topic: a commit to any of them wakes one
		// fetch, not one per topic.
		fetcher, err := kafkax.NewFetcher(r.Client)
		if err != nil {
			return fmt.Errorf("consumer of %v: %w", topics, err)
		}
		defer fetcher.Close() // after every Read has returned: errc below
		errc := make(chan error, len(topics))
		for _, topic := range topics {
			go func() {
				errc <- kafkax.Read(ctx, r.Client, kafkax.ReadOptions{
					Topic: topic, MaxBatch: 1000, Fetcher: fetcher,
					Start: func(p int32) (int64, error) {
						off, ok, err := r.Sink.Position(ctx, topic, p)
						if err != nil || !ok {
							return sarama.OffsetOldest, err
						}
						return off, nil
					},
					Handle: func(ctx context.Context, p int32, recs []*sarama.ConsumerMessage) error {
						next := recs[len(recs)-1].Offset + 1
						if err := r.Sink.Write(ctx, topic, p, recs, next); err != nil {
							return fmt.Errorf("%s sink: %w", r.Sink.Name(), err)
						}
						recordsReplicated.WithLabelValues(r.Sink.Name(), topic).Add(float64(len(recs)))
						return nil
					},
					CaughtUp: func(int32) {
						r.mu.Lock()
						behind--
						if behind == 0 {
							r.ready = true
							r.Log.Info("replicator caught up", "sink", r.Sink.Name(), "topics", topics)
						}
						r.mu.Unlock()
					},
				})
			}()
		}
		var first error
		for range topics {
			if err := <-errc; err != nil && first == nil {
				first = err
				cancel()
			}
		}
		return first
	})
}

// drainedCheckBelow is the lag, in offsets, under which sampleLag asks
// whether only transaction markers are left (one fetch of the partition).
const drainedCheckBelow = 100

// sampleLag sets the lag gauge of every topic until ctx ends.
func (r *Replicator) sampleLag(ctx context.Context, topics []string) {
	every := r.LagEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, topic := range topics {
			parts, err := r.Client.Partitions(topic)
			if err != nil {
				continue
			}
			var total int64
			for _, p := range parts {
				end, err := r.Client.GetOffset(topic, p, sarama.OffsetNewest)
				if err != nil {
					continue
				}
				pos, ok, err := r.Sink.Position(ctx, topic, p)
				if err != nil {
					continue
				}
				if !ok {
					pos, _ = r.Client.GetOffset(topic, p, sarama.OffsetOldest)
				}
				// The end counts transaction markers (the projector writes
				// in transactions), which are never delivered: a position
				// a few offsets short of it may have read everything.
				if n := end - pos; n > 0 && n <= drainedCheckBelow {
					if drained, err := kafkax.Drained(r.Client, topic, p, pos, end); err == nil && drained {
						continue
					}
				}
				total += max(0, end-pos)
			}
			lag.WithLabelValues(r.Sink.Name(), topic).Set(float64(total))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
