package replicator

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/IBM/sarama"

	"profiles/platform/kafkax"
	"profiles/platform/topology"
)

// KafkaSink mirrors source topics to another Kafka cluster (another
// region, say). Each source record goes to the same partition of the
// target topic of the same base name, with its key, value (a tombstone
// stays a tombstone) and headers, so per-key order and compaction are
// preserved. Each batch is one transaction on the target cluster that also
// writes the batch's position to a compacted checkpoint topic there; a
// restarted mirror reads its checkpoints back (read_committed) and resumes
// exactly after the last committed batch. The transactional id fences a
// second mirror with the same id.
//
// Use NewKafkaSink; Close it. Write calls are serialized (one transaction
// at a time).
type KafkaSink struct {
	txSink
}

// txSink writes each batch of source records, converted by convert, and the
// batch's position, in one transaction, and reads the positions back from
// its compacted checkpoint topic at start. KafkaSink and ClearSink are
// txSinks.
type txSink struct {
	name        string
	producer    sarama.SyncProducer
	checkpoints string
	// convert returns the target record of a source record, or nil to
	// write none for it; an error fails the batch (it is retried from the
	// checkpoint).
	convert func(topic string, p int32, r *sarama.ConsumerMessage) (*sarama.ProducerMessage, error)
	// written, if set, is called (holding mu) with the records of
	// partition p that a Write committed.
	written func(p int32, msgs []*sarama.ProducerMessage)

	mu        sync.Mutex
	positions map[string]int64 // "topic/partition" → next offset
}

// KafkaSinkConfig configures a KafkaSink.
type KafkaSinkConfig struct {
	// Target is the target cluster; its topic names are the base names of
	// the source topics (generation 1's), and Partitions must match.
	Target topology.Config
	// CheckpointTopic on the target cluster; "" means
	// "profile-mirror-checkpoints".
	CheckpointTopic string
	// TransactionalID of the mirror's producer; one per mirror process.
	TransactionalID string
	// Source is the source configuration, to map generation topics
	// (profile-snapshots.v2) back to their base names.
	Source topology.Config
}

// NewKafkaSink creates the target topics if needed, and reads the
// checkpoints.
func NewKafkaSink(ctx context.Context, cfg KafkaSinkConfig) (*KafkaSink, error) {
	if cfg.CheckpointTopic == "" {
		cfg.CheckpointTopic = "profile-mirror-checkpoints"
	}
	specs := []topology.TopicSpec{{Name: cfg.CheckpointTopic, Partitions: 1, Required: map[string]string{"cleanup.policy": "compact"}}}
	for _, s := range cfg.Target.Specs() {
		if s.Name == cfg.Target.SnapshotsTopic || s.Name == cfg.Target.EventsTopic {
			specs = append(specs, s)
		}
	}
	if err := topology.CreateTopics(ctx, cfg.Target, "replicator", specs); err != nil {
		return nil, fmt.Errorf("target cluster: %w", err)
	}
	target := func(source string) string {
		if source == cfg.Source.EventsTopic {
			return cfg.Target.EventsTopic
		}
		return cfg.Target.SnapshotsTopic // the snapshot topic of any generation
	}
	k := &KafkaSink{txSink{name: "kafka", checkpoints: cfg.CheckpointTopic, positions: map[string]int64{}}}
	k.convert = func(topic string, p int32, r *sarama.ConsumerMessage) (*sarama.ProducerMessage, error) {
		m := &sarama.ProducerMessage{Topic: target(topic), Partition: p, Key: sarama.ByteEncoder(r.Key), Timestamp: r.Timestamp}
		if r.Value != nil {
			m.Value = sarama.ByteEncoder(r.Value)
		}
		for _, h := range r.Headers {
			if h != nil && !strings.HasPrefix(string(h.Key), "__") {
				m.Headers = append(m.Headers, *h)
			}
		}
		return m, nil
	}
	if err := k.open(ctx, cfg.Target, cfg.TransactionalID); err != nil {
		return nil, fmt.Errorf("target cluster: %w", err)
	}
	return k, nil
}

// open reads the checkpoints of cluster c back (read_committed) and
// creates the transactional producer.
func (k *txSink) open(ctx context.Context, c topology.Config, transactionalID string) error {
	client, err := sarama.NewClient(c.Brokers, c.Sarama("replicator"))
	if err != nil {
		return err
	}
	defer client.Close()
	err = kafkax.Read(ctx, client, kafkax.ReadOptions{
		Topic: k.checkpoints, StopAtEnd: true,
		Handle: func(_ context.Context, _ int32, recs []*sarama.ConsumerMessage) error {
			for _, r := range recs {
				if off, err := strconv.ParseInt(string(r.Value), 10, 64); err == nil {
					k.positions[string(r.Key)] = off
				}
			}
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("read checkpoints: %w", err)
	}

	pc := c.ProducerSarama("replicator")
	pc.Producer.Transaction.ID = transactionalID
	pc.Producer.Partitioner = sarama.NewManualPartitioner
	if k.producer, err = sarama.NewSyncProducer(c.Brokers, pc); err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	return nil
}

// Name implements Sink.
func (k *txSink) Name() string { return k.name }

// Close closes the producer.
func (k *txSink) Close() error { return k.producer.Close() }

func checkpointKey(topic string, p int32) string { return topic + "/" + strconv.Itoa(int(p)) }

// Position implements Sink.
func (k *txSink) Position(_ context.Context, topic string, p int32) (int64, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	off, ok := k.positions[checkpointKey(topic, p)]
	return off, ok, nil
}

// Write implements Sink: one transaction with the converted records and
// the checkpoint.
func (k *txSink) Write(_ context.Context, topic string, p int32, records []*sarama.ConsumerMessage, next int64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	msgs := make([]*sarama.ProducerMessage, 0, len(records)+1)
	for _, r := range records {
		m, err := k.convert(topic, p, r)
		if err != nil {
			return err
		}
		if m != nil {
			msgs = append(msgs, m)
		}
	}
	data := msgs
	msgs = append(msgs, &sarama.ProducerMessage{
		Topic: k.checkpoints, Partition: 0,
		Key: sarama.StringEncoder(checkpointKey(topic, p)), Value: sarama.StringEncoder(strconv.FormatInt(next, 10)),
	})
	if err := k.send(msgs); err != nil {
		return err
	}
	k.positions[checkpointKey(topic, p)] = next
	if k.written != nil {
		k.written(p, data)
	}
	return nil
}

// send writes msgs in one transaction. Hold k.mu.
func (k *txSink) send(msgs []*sarama.ProducerMessage) error {
	if err := k.producer.BeginTxn(); err != nil {
		return err
	}
	if err := k.producer.SendMessages(msgs); err != nil {
		_ = k.producer.AbortTxn()
		return err
	}
	if err := k.producer.CommitTxn(); err != nil {
		_ = k.producer.AbortTxn()
		return err
	}
	return nil
}
