package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"

	"profiles/platform/kafkax"
)

// ConsumerChoice compares, over the same event log and in the same run, the
// two ways the project reads a topic, so that docs/architecture.md's choice between
// them rests on a figure: watermill-kafka's subscriber, a consumer group
// that hands over one message at a time per partition, each acked before
// the next (what the projector uses), and kafkax.Read, sarama's partition
// consumer handing over batches (what replay, restores, full-replica mode
// and the keyring use). Neither decodes what it reads.
type ConsumerChoice struct {
	Records int `json:"records"`
	// Watermill is the subscriber's rate, from Subscribe (the group join
	// included) to the last record.
	Watermill float64 `json:"watermill_records_per_s"`
	// Read is kafkax.Read's rate, from its start to the last record (not
	// to its return, which waits to be sure every partition is drained).
	Read float64 `json:"kafkax_read_records_per_s"`
}

// MeasureConsumers reads the n records of topic once with each reader and
// returns their rates. group names the watermill subscriber's consumer
// group (new, so that it starts at the oldest offset).
func MeasureConsumers(ctx context.Context, sc func(clientID string) *sarama.Config, brokers []string, topic, group string, n int) (ConsumerChoice, error) {
	out := ConsumerChoice{Records: n}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()

	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers: brokers, ConsumerGroup: group, OverwriteSaramaConfig: sc("bench-watermill"),
	}, watermill.NopLogger{})
	if err != nil {
		return out, err
	}
	defer sub.Close()
	start := time.Now()
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		return out, err
	}
	for got := 0; got < n; got++ {
		select {
		case m, ok := <-msgs:
			if !ok {
				return out, fmt.Errorf("watermill subscriber closed after %d of %d records", got, n)
			}
			m.Ack()
		case <-ctx.Done():
			return out, fmt.Errorf("watermill subscriber: %d of %d records: %w", got, n, ctx.Err())
		}
	}
	out.Watermill = float64(n) / time.Since(start).Seconds()

	client, err := sarama.NewClient(brokers, sc("bench-read"))
	if err != nil {
		return out, err
	}
	defer client.Close()
	var (
		read atomic.Int64
		took atomic.Int64 // when the last record was handed over
	)
	start = time.Now()
	err = kafkax.Read(ctx, client, kafkax.ReadOptions{
		Topic: topic, StopAtEnd: true, MaxBatch: 10000,
		Handle: func(_ context.Context, _ int32, recs []*sarama.ConsumerMessage) error {
			if read.Add(int64(len(recs))) == int64(n) {
				took.Store(int64(time.Since(start)))
			}
			return nil
		},
	})
	if err != nil {
		return out, err
	}
	if got := read.Load(); got != int64(n) {
		return out, fmt.Errorf("kafkax.Read: %d records, want %d", got, n)
	}
	out.Read = float64(n) / time.Duration(took.Load()).Seconds()
	return out, nil
}
