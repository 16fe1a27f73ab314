package changes

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/IBM/sarama"

	"profiles/platform/kafkax"
	"profiles/platform/pii"
)

// Source opens what one stream reads.
type Source interface {
	// Open starts the reading of topic for one stream; the stream closes
	// the session when it ends.
	Open(ctx context.Context, topic string) (Session, error)
}

// Session is one stream's reading of a snapshot topic.
type Session interface {
	// Bounds returns the bounds of every partition of the topic.
	Bounds(ctx context.Context) (map[int32]Bounds, error)
	// Read hands the records of every partition in start, from its offset
	// on, decoded, to handle in offset order (batches, which handle may
	// keep; partitions concurrently), until ctx ends (nil) or reading
	// fails.
	Read(ctx context.Context, start map[int32]int64, handle func(ctx context.Context, p int32, records []Record) error) error
	Close() error
}

// Kafka is the Source of query-svc: each session has a sarama client of
// its own, from NewClient, and reads with a plain sarama consumer of that
// client (kafkax.Read), read_committed.
//
// A client per stream, not the service's shared client: a Kafka broker
// answers the requests of one connection one at a time, and an idle
// stream's fetch waits there for new records (Consumer.MaxWaitTime). On a
// shared connection, every idle stream would delay the service's own
// requests (offsets at an assignment, the routing table) and the other
// streams' start by that much.
type Kafka struct {
	NewClient func() (sarama.Client, error)
	// Codec opens the snapshots read.
	Codec *pii.Codec
}

// Open implements Source.
func (k Kafka) Open(_ context.Context, topic string) (Session, error) {
	c, err := k.NewClient()
	if err != nil {
		return nil, fmt.Errorf("kafka client for a change stream: %w", err)
	}
	return &session{client: c, topic: topic, codec: k.Codec}, nil
}

type session struct {
	client sarama.Client
	topic  string
	codec  *pii.Codec
}

func (s *session) Close() error { return s.client.Close() }

func (s *session) Read(ctx context.Context, start map[int32]int64, handle func(context.Context, int32, []Record) error) error {
	return kafkax.Read(ctx, s.client, kafkax.ReadOptions{
		Topic:      s.topic,
		Partitions: slices.Sorted(maps.Keys(start)),
		Start:      func(p int32) (int64, error) { return start[p], nil },
		Handle: func(ctx context.Context, p int32, records []*sarama.ConsumerMessage) error {
			return handle(ctx, p, DecodeAll(s.codec, records))
		},
		MaxBatch: 500,
	})
}

func (s *session) Bounds(ctx context.Context) (map[int32]Bounds, error) {
	var parts []int32
	err := s.retry(ctx, func() (err error) {
		if parts, err = s.client.Partitions(s.topic); err == nil && len(parts) == 0 {
			err = sarama.ErrLeaderNotAvailable
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", s.topic, err)
	}
	var oldest, high, stable map[int32]int64
	for _, q := range []struct {
		out *map[int32]int64
		at  int64
		iso sarama.IsolationLevel
	}{
		{&oldest, sarama.OffsetOldest, sarama.ReadUncommitted},
		{&high, sarama.OffsetNewest, sarama.ReadUncommitted},
		{&stable, sarama.OffsetNewest, sarama.ReadCommitted},
	} {
		err := s.retry(ctx, func() (err error) {
			*q.out, err = s.listOffsets(parts, q.at, q.iso)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("offsets of %s: %w", s.topic, err)
		}
	}
	out := make(map[int32]Bounds, len(parts))
	for _, p := range parts {
		out[p] = Bounds{Oldest: oldest[p], Stable: stable[p], High: high[p]}
	}
	return out, nil
}

// listOffsets returns the offsets of parts of the session's topic (see
// kafkax.ListOffsets).
func (s *session) listOffsets(parts []int32, at int64, iso sarama.IsolationLevel) (map[int32]int64, error) {
	out, err := kafkax.ListOffsets(s.client, at, iso, map[string][]int32{s.topic: parts})
	if err != nil {
		return nil, err
	}
	return out[s.topic], nil
}

// retry runs op until it succeeds or ctx ends, refreshing the topic's
// metadata between attempts (a leader moved, a broker restarted).
func (s *session) retry(ctx context.Context, op func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := op()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
		_ = s.client.RefreshMetadata(s.topic)
	}
}
