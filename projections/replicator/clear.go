package replicator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/IBM/sarama"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
)

// ClearSink keeps a compacted topic of the current profiles in clear, for
// downstream systems (Kafka Connect, a warehouse loader) that cannot hold
// the profiles' data keys: the record of a live profile has the profile's
// uid as its key and its JSON as its value, the same fields as the API's
// profile (uid, username, displayName, email, version, createdAt,
// updatedAt); a deleted profile is a tombstone (a null value). Every
// record carries the profile-version header.
//
// Each source partition p goes to partition p of the clear topic, in
// order, so the records of one profile stay in version order there. A
// snapshot whose data key is gone (the profile was deleted; its tombstone
// follows in the same partition) is written as nothing: its fields are
// erased, not empty.
//
// Erasure: the topic is compacted with max.compaction.lag.ms (and
// segment.ms) set to ClearSinkConfig.MaxCompactionLag, and Run appends a
// tombstone again once it is that old (see closeOff), so the clear values
// of a deleted profile, which precede its tombstone, are removed from the
// brokers' disks within about 1.25 times that bound of the tombstone,
// plus the cleaner's pass (docs/threat-model.md); delete.retention.ms
// (DeleteRetention) is how long the tombstone itself, which holds no
// personal data, stays for consumers that lag.
//
// Each batch is one transaction on the cluster, with the batch's position
// in a compacted checkpoint topic, as for KafkaSink: a read_committed
// consumer of the clear topic sees each snapshot exactly once, except
// after a switch of snapshot generation, which re-delivers the current
// state (idempotent upserts by key).
//
// Use NewClearSink; run Run beside the replicator; Close it.
type ClearSink struct {
	txSink
	lag time.Duration
	now func() time.Time
	log *slog.Logger

	// pending maps a partition of the clear topic to the tombstones
	// written to it that no later append has yet moved out of the active
	// segment (guarded by txSink.mu).
	pending map[int32]pendingTombstone
}

// pendingTombstone is the newest tombstone of a partition, and when the
// oldest tombstone not yet closed off was written.
type pendingTombstone struct {
	since time.Time
	last  *sarama.ProducerMessage
}

// ClearSinkConfig configures a ClearSink.
type ClearSinkConfig struct {
	// Kafka is the cluster of the source topics, where the clear topic
	// lives too, with as many partitions.
	Kafka topology.Config
	// Topic is the clear topic; "" means "profile-clear".
	Topic string
	// CheckpointTopic holds the sink's positions; "" means
	// "profile-clear-checkpoints".
	CheckpointTopic string
	// TransactionalID of the sink's producer; "" means "profiles-clear".
	TransactionalID string
	// MaxCompactionLag bounds how long a clear value survives the record
	// that replaces it (a newer version or a tombstone); 0 means an hour.
	MaxCompactionLag time.Duration
	// DeleteRetention is how long a tombstone is kept after compaction
	// reached it; 0 means seven days.
	DeleteRetention time.Duration
	// Codec opens the sealed snapshots.
	Codec *pii.Codec
	Log   *slog.Logger
}

func (cfg *ClearSinkConfig) defaults() {
	if cfg.Topic == "" {
		cfg.Topic = "profile-clear"
	}
	if cfg.CheckpointTopic == "" {
		cfg.CheckpointTopic = "profile-clear-checkpoints"
	}
	if cfg.TransactionalID == "" {
		cfg.TransactionalID = "profiles-clear"
	}
	if cfg.MaxCompactionLag <= 0 {
		cfg.MaxCompactionLag = time.Hour
	}
	if cfg.DeleteRetention <= 0 {
		cfg.DeleteRetention = 7 * 24 * time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
}

// ClearTopicSpec returns the layout of the clear topic: compacted, with
// the erasure bound of cfg. An existing topic whose cleanup.policy,
// max.compaction.lag.ms or delete.retention.ms differ is refused
// (topology.ErrTopicMismatch): the bound the operator configured is the
// one the broker applies.
func ClearTopicSpec(cfg ClearSinkConfig) topology.TopicSpec {
	cfg.defaults()
	lag := strconv.FormatInt(cfg.MaxCompactionLag.Milliseconds(), 10)
	return topology.TopicSpec{
		Name: cfg.Topic, Partitions: cfg.Kafka.Partitions,
		Required: map[string]string{
			"cleanup.policy":        "compact",
			"max.compaction.lag.ms": lag,
			"delete.retention.ms":   strconv.FormatInt(cfg.DeleteRetention.Milliseconds(), 10),
		},
		// The broker rolls a compacted segment after max.compaction.lag.ms
		// anyway; segment.ms says so explicitly.
		Extra: map[string]string{"segment.ms": lag, "min.compaction.lag.ms": "0"},
	}
}

// NewClearSink creates (or verifies) the clear topic and the checkpoint
// topic, and reads the checkpoints.
func NewClearSink(ctx context.Context, cfg ClearSinkConfig) (*ClearSink, error) {
	cfg.defaults()
	if cfg.Codec == nil {
		return nil, errors.New("clear sink: no codec")
	}
	specs := []topology.TopicSpec{
		{Name: cfg.CheckpointTopic, Partitions: 1, Required: map[string]string{"cleanup.policy": "compact"}},
		ClearTopicSpec(cfg),
	}
	if err := topology.CreateTopics(ctx, cfg.Kafka, "replicator", specs); err != nil {
		return nil, err
	}
	s := &ClearSink{
		txSink: txSink{name: "clear", checkpoints: cfg.CheckpointTopic, positions: map[string]int64{}},
		lag:    cfg.MaxCompactionLag, now: time.Now, log: cfg.Log, pending: map[int32]pendingTombstone{},
	}
	s.convert = func(topic string, p int32, r *sarama.ConsumerMessage) (*sarama.ProducerMessage, error) {
		return clearRecord(cfg.Codec, cfg.Topic, topic, p, r, cfg.Log)
	}
	s.written = s.noteTombstones
	if err := s.open(ctx, cfg.Kafka, cfg.TransactionalID); err != nil {
		return nil, fmt.Errorf("clear sink: %w", err)
	}
	return s, nil
}

// clearRecord converts a snapshot record of source topic/p into the
// record of the clear topic target, or nil for none.
func clearRecord(codec *pii.Codec, target, topic string, p int32, r *sarama.ConsumerMessage, log *slog.Logger) (*sarama.ProducerMessage, error) {
	header := kafkax.HeaderValue(r, events.HeaderVersion)
	prof, err := codec.DecodeSnapshot(string(r.Key), r.Value, header)
	if errors.Is(err, pii.ErrKeyUnavailable) {
		return nil, err // retried from the checkpoint; the record is not skipped
	}
	if err != nil {
		log.Warn("clear: skipping a record that is not a snapshot",
			"topic", topic, "partition", p, "offset", r.Offset, "err", err)
		recordsSkipped.WithLabelValues("clear", topic).Inc()
		return nil, nil
	}
	if prof.Erased && !prof.Deleted {
		// The profile was deleted and its key shredded: its tombstone
		// follows. Nothing of it is written in clear.
		return nil, nil
	}
	m := &sarama.ProducerMessage{
		Topic: target, Partition: p, Key: sarama.StringEncoder(prof.UID), Timestamp: r.Timestamp,
		Headers: []sarama.RecordHeader{{Key: []byte(events.HeaderVersion), Value: []byte(strconv.FormatInt(prof.Version, 10))}},
	}
	if prof.Deleted {
		if prof.Version == 0 { // a tombstone without the version header
			m.Headers = nil
		}
		return m, nil // a tombstone: no value
	}
	value, err := json.Marshal(prof)
	if err != nil {
		return nil, err
	}
	m.Value = sarama.ByteEncoder(value)
	return m, nil
}

// noteTombstones remembers the tombstones among msgs, written to
// partition p (holding mu).
func (s *ClearSink) noteTombstones(p int32, msgs []*sarama.ProducerMessage) {
	for _, m := range msgs {
		if m.Value != nil {
			continue
		}
		pt, ok := s.pending[p]
		if !ok {
			pt.since = s.now()
		}
		pt.last = m
		s.pending[p] = pt
	}
}

// closeOff writes, to every partition whose oldest pending tombstone is
// older than the compaction lag, that partition's newest tombstone once
// more. Kafka rolls a segment only when a record is appended, and never
// compacts the active segment; so without this append, a partition that
// gets no write after a delete would keep the deleted profile's clear
// values in its active segment indefinitely. The repeated tombstone lands
// in a new segment (the old one is older than segment.ms), and the
// cleaner must then compact the old one within max.compaction.lag.ms. A
// consumer sees the delete twice, which an upsert-by-key store ignores.
func (s *ClearSink) closeOff() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var msgs []*sarama.ProducerMessage
	var parts []int32
	for p, pt := range s.pending {
		if now.Sub(pt.since) < s.lag {
			continue
		}
		// A new message: a sent one holds the producer's state.
		msgs = append(msgs, &sarama.ProducerMessage{
			Topic: pt.last.Topic, Partition: p, Key: pt.last.Key, Headers: pt.last.Headers, Timestamp: now,
		})
		parts = append(parts, p)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	if err := s.send(msgs); err != nil {
		return 0, err
	}
	for _, p := range parts {
		delete(s.pending, p)
	}
	return len(msgs), nil
}

// Run closes off pending tombstones (closeOff) every quarter of the
// compaction lag, so that a deleted profile's clear values leave the
// brokers within about 1.25 times max.compaction.lag.ms, plus the
// cleaner's pass, even on a partition with no other write. Pending
// tombstones are kept in memory: after a restart, only the partition's
// next write closes off the ones written before.
func (s *ClearSink) Run(ctx context.Context) error {
	every := max(s.lag/4, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if n, err := s.closeOff(); err != nil {
			// Kept pending; retried at the next tick.
			s.log.Warn("clear: cannot append the closing tombstones; retrying", "err", err)
		} else if n > 0 {
			s.log.Info("clear: appended closing tombstones, so that compaction can erase the deleted profiles", "partitions", n)
		}
	}
}
