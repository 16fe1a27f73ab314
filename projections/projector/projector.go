// Package projector folds the event log into the compacted snapshot topic:
// each event becomes the new snapshot of its profile (an upsert), and a
// ProfileDeleted becomes a tombstone.
//
// The fold is idempotent by version. The projector remembers the version of
// the last snapshot of every profile (State, restored from the snapshot
// topic at start), and an event at or below that version is a redelivery and
// is skipped. So a crash between writing a snapshot and committing the
// consumer offset costs a re-read, never a wrong or doubled snapshot.
package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
	"profiles/projections/projection"
)

var eventsFolded = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "profiles_projector_events_total",
	Help: "Events read from the event log, by result: applied, duplicate (a redelivery, skipped) or poison (undecodable or not applicable, skipped).",
}, []string{"result"})

// DeadLetterSink sets aside a record the projector cannot use (see
// topology.DeadLetters).
type DeadLetterSink interface {
	Send(r topology.DeadRecord, reason error) error
}

// Projector consumes the event log and writes snapshots and the email
// index. Set its fields (DeadLetters may be nil) and call Run
// once, after State has been restored from the snapshot topic
// (State.Restore).
type Projector struct {
	Subscriber      message.Subscriber
	Publisher       message.Publisher
	Client          sarama.Client // for restoring State from the snapshot topic
	EventsTopic     string
	SnapshotsTopic  string
	EmailIndexTopic string
	// DeadLetters receives poison events; nil only logs them.
	DeadLetters DeadLetterSink
	State       *State
	Log         *slog.Logger
	// Codec opens the events and seals the snapshots.
	Codec *pii.Codec
}

// Run consumes events until ctx ends. Each event is acked only after its
// snapshot has been written, so every event is folded at least once and,
// by the version check, exactly once into the snapshot.
//
// watermill's Kafka subscriber delivers one un-acked message per partition
// at a time, all on one channel. Run hands each partition's messages to a
// goroutine of that partition, so partitions fold in parallel while each
// keeps its order; folding them all on one goroutine would make the
// projector as slow as one produce round trip per event in total.
func (p *Projector) Run(ctx context.Context) error {
	msgs, err := p.Subscriber.Subscribe(ctx, p.EventsTopic)
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", p.EventsTopic, err)
	}
	workers := map[int32]chan *message.Message{}
	defer func() {
		for _, ch := range workers {
			close(ch)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-msgs:
			if !ok {
				return nil
			}
			partition, _ := kafka.MessagePartitionFromCtx(msg.Context())
			ch := workers[partition]
			if ch == nil {
				ch = make(chan *message.Message, 1)
				workers[partition] = ch
				go p.fold(ctx, ch)
			}
			select {
			case ch <- msg:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// fold handles the messages of one partition, in order.
func (p *Projector) fold(ctx context.Context, msgs <-chan *message.Message) {
	for msg := range msgs {
		if err := p.handle(ctx, msg); err != nil {
			p.Log.Warn("snapshot not written; the event will be redelivered", "err", err)
			msg.Nack()
			continue
		}
		msg.Ack()
	}
}

// handle folds one event. It returns an error only when the event should be
// retried; a poison event is logged, counted and skipped.
func (p *Projector) handle(ctx context.Context, msg *message.Message) error {
	partition, _ := kafka.MessagePartitionFromCtx(msg.Context())
	offset, _ := kafka.MessagePartitionOffsetFromCtx(msg.Context())
	poison := func(reason error) error {
		p.Log.Error("setting a poison event aside", "topic", p.EventsTopic, "partition", partition, "offset", offset, "err", reason)
		if p.DeadLetters != nil {
			key, _ := kafka.MessageKeyFromCtx(msg.Context())
			err := p.DeadLetters.Send(topology.DeadRecord{
				Topic: p.EventsTopic, Partition: partition, Offset: offset,
				Key: key, Value: msg.Payload, Headers: msg.Metadata,
			}, reason)
			if err != nil {
				return err // retried: a poison event is never dropped unrecorded
			}
		}
		eventsFolded.WithLabelValues("poison").Inc()
		return nil
	}

	e, err := p.Codec.DecodeEvent(msg.Payload)
	if errors.Is(err, pii.ErrKeyUnavailable) {
		return err // retried: the event is good, its key is not readable yet
	}
	if err != nil {
		return poison(err)
	}
	state := p.State.Get(e.UID)
	if e.Version > state.Version+1 {
		// Our memory of this partition is behind the snapshot topic (another
		// projector instance owned the partition for a while): reload it.
		if _, err := p.State.Restore(ctx, p.Codec, p.Client, p.SnapshotsTopic, []int32{partition}); err != nil {
			return err
		}
		state = p.State.Get(e.UID)
	}
	if events.IsDuplicate(state, e) {
		eventsFolded.WithLabelValues("duplicate").Inc()
		return nil
	}
	next, err := events.Apply(state, e)
	if err != nil {
		return poison(err)
	}
	recs, err := projection.Step(p.Codec, projection.Target{Snapshots: p.SnapshotsTopic, EmailIndex: p.EmailIndexTopic, Source: "/projector"}, state, next, &e)
	if errors.Is(err, pii.ErrKeyUnavailable) {
		return err // retried: the snapshot is sealed with a key not readable yet
	}
	if err != nil {
		return poison(err)
	}
	// The index records go first and the snapshot last: the snapshot topic
	// is what State is restored from, so a snapshot that exists proves that
	// everything for its event was written. A crash in between re-folds
	// the event and writes the index records again, which is harmless.
	index, snapshot := recs[:len(recs)-1], recs[len(recs)-1]
	msgs := make([]*message.Message, len(index))
	for i, r := range index {
		msgs[i] = newMessage(r)
	}
	if err := p.Publisher.Publish(p.EmailIndexTopic, msgs...); err != nil {
		return fmt.Errorf("publish email index of %s v%d: %w", e.UID, next.Version, err)
	}
	if err := p.Publisher.Publish(p.SnapshotsTopic, newMessage(snapshot)); err != nil {
		return fmt.Errorf("publish snapshot of %s v%d: %w", e.UID, next.Version, err)
	}
	p.State.Put(next)
	eventsFolded.WithLabelValues("applied").Inc()
	return nil
}

// ErrNotRestored is what the projector's readiness check reports until its
// State has been restored from the snapshot topic.
var ErrNotRestored = errors.New("state not restored from the snapshot topic yet")

// newMessage is r as a watermill message for kafkax's keyed publisher.
func newMessage(r projection.Record) *message.Message {
	return kafkax.NewKeyedMessage(r.ID, r.Key, r.Headers, r.Value)
}
