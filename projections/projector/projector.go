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
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/trace"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
	"profiles/projections/projection"
)

var (
	eventsFolded = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "profiles_projector_events_total",
		Help: "Events read from the event log, by result: applied, duplicate (a redelivery, skipped) or poison (undecodable or not applicable, skipped).",
	}, []string{"result"})
	batchSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "profiles_projector_batch_seconds",
		Help:    "Duration of writing one batch: its snapshot and email index records (acks=all) and the state with their offsets.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	batchRecords = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "profiles_projector_batch_records",
		Help:    "Records written per batch (one produce of the email index records, then one of the snapshots).",
		Buckets: prometheus.ExponentialBuckets(1, 4, 7),
	})
	retries = promauto.NewCounter(prometheus.CounterOpts{
		Name: "profiles_projector_retries_total",
		Help: "Batches folded again after an error (a write that failed, a data key not readable yet).",
	})
)

// DeadLetterSink sets aside a record the projector cannot use (see
// topology.DeadLetters).
type DeadLetterSink interface {
	Send(r topology.DeadRecord, reason error) error
}

// Producer writes a batch of records, all or none, and returns once they
// are committed (each then has its Offset set), or with an error: a
// kafkax.TxnWriter. The projector's readers read committed records only.
type Producer interface {
	SendMessages(msgs []*sarama.ProducerMessage) error
}

// Projector folds batches of events into snapshots and the email index.
// Set its fields (DeadLetters may be nil), restore State from the
// snapshot topic (State.Restore), and hand Handle to a consumer group
// (kafkax.GroupOptions.Handle). Handle may run concurrently for different
// partitions, never for one partition.
type Projector struct {
	Producer        Producer
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
	// RetryBackoff is the first wait before a batch is folded again after
	// an error; it doubles up to 5 s. Zero means 200 ms.
	RetryBackoff time.Duration
}

// Handle folds records, a batch of one partition of the event log in
// offset order, and returns once everything for them is written: the
// caller may then commit the offset after the last one. Each batch is one
// write (one transaction: its email index records and its snapshots),
// whatever its size, and the batches of different partitions written at
// the same time share a transaction (see kafkax.TxnWriter).
//
// A failed write or a data key not readable yet is retried here, from the
// first record not yet written, until it succeeds or ctx ends (Handle then
// returns ctx's error and nothing past the written records counts as
// folded). A poison event is set aside and skipped.
func (p *Projector) Handle(ctx context.Context, _ string, partition int32, records []*sarama.ConsumerMessage) error {
	backoff := cmp.Or(p.RetryBackoff, 200*time.Millisecond)
	for len(records) > 0 {
		done, err := p.fold(ctx, partition, records)
		records = records[done:]
		if err == nil || len(records) == 0 {
			return nil
		}
		retries.Inc()
		p.Log.Warn("snapshots not written; folding again", "partition", partition, "offset", records[0].Offset, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

// batch is what fold has decided and not yet written: the records and the
// states they lead to.
type batch struct {
	index, snapshots []*sarama.ProducerMessage
	next             map[string]events.Profile // uid: its state after the batch
	applied          int
	// spans are the spans of processing the batch's events
	// (kafkax.StartProcess), ended once the batch is written or failed.
	spans []trace.Span
	// at is where the record of a topic and key is in index or snapshots:
	// a later step of the same key replaces it, so that a batch writes
	// only the last state of each profile and index entry. The events of
	// one command always come in one batch (kafkax.HeaderContinues), so
	// no reader ever sees the state between two of them.
	at map[recordKey]int
}

type recordKey struct{ topic, key string }

// add adds m, the record of rec, to list, or replaces the record of the
// same topic and key that list already holds.
func (b *batch) add(list *[]*sarama.ProducerMessage, rec projection.Record, m *sarama.ProducerMessage) {
	k := recordKey{rec.Topic, rec.Key}
	if i, ok := b.at[k]; ok {
		(*list)[i] = m
		return
	}
	b.at[k] = len(*list)
	*list = append(*list, m)
}

// fold folds records and writes what they produce. It returns how many
// records are done (written, or skipped): all of them with a nil error,
// and the ones before the one that failed otherwise.
func (p *Projector) fold(ctx context.Context, partition int32, records []*sarama.ConsumerMessage) (int, error) {
	b := &batch{next: map[string]events.Profile{}, at: map[recordKey]int{}}
	state := func(uid string) (events.Profile, error) {
		if s, ok := b.next[uid]; ok {
			return s, nil
		}
		return p.State.Get(uid)
	}
	done := 0 // records before this one are written
	defer func() { endSpans(b, errors.New("not written")) }()
	flush := func(upTo int) error {
		if err := p.write(b); err != nil {
			endSpans(b, err)
			return err
		}
		endSpans(b, nil)
		done = upTo
		b = &batch{next: map[string]events.Profile{}, at: map[recordKey]int{}}
		return nil
	}
	// setAside writes what is decided before records[i], then sets that
	// poison record aside and counts it done.
	setAside := func(i int, r *sarama.ConsumerMessage, reason error) error {
		if err := flush(i); err != nil {
			return err
		}
		if err := p.poison(r, reason); err != nil {
			return err
		}
		done = i + 1
		return nil
	}
	for i, r := range records {
		e, err := p.Codec.DecodeEvent(r.Value)
		if errors.Is(err, pii.ErrKeyUnavailable) {
			return done, errors.Join(flush(i), err) // the event is good, its key is not readable yet
		}
		if err != nil {
			if err := setAside(i, r, err); err != nil {
				return done, err
			}
			continue
		}
		prev, err := state(e.UID)
		if err != nil {
			return done, errors.Join(flush(i), err)
		}
		if e.Version > prev.Version+1 {
			// Our memory of this partition is behind the snapshot topic
			// (another projector instance owned the partition for a while):
			// write what is decided, and reload it.
			if err := flush(i); err != nil {
				return done, err
			}
			if _, err := p.State.RestorePartition(ctx, p.Codec, p.Client, partition); err != nil {
				return done, err
			}
			if prev, err = p.State.Get(e.UID); err != nil {
				return done, err
			}
		}
		if events.IsDuplicate(prev, e) {
			eventsFolded.WithLabelValues("duplicate").Inc()
			if len(b.next) == 0 {
				done = i + 1
			}
			continue
		}
		next, err := events.Apply(prev, e)
		var recs []projection.Record
		if err == nil {
			recs, err = projection.Step(p.Codec, projection.Target{Snapshots: p.SnapshotsTopic, EmailIndex: p.EmailIndexTopic, Source: "/projector"}, prev, next, &e)
		}
		if errors.Is(err, pii.ErrKeyUnavailable) {
			return done, errors.Join(flush(i), err) // the snapshot is sealed with a key not readable yet
		}
		if err != nil {
			if err := setAside(i, r, err); err != nil {
				return done, err
			}
			continue
		}
		headers := projection.RecordHeaders(recs[0].Headers) // one map for every record of the step
		// The snapshot and the index records continue the trace of the
		// event (its span when tracing is on, the context it carried
		// when off), so that query-svc's apply joins the write's trace.
		rctx, span := kafkax.StartProcess(ctx, r)
		kafkax.InjectTraceHeaders(rctx, &headers)
		if span.IsRecording() {
			b.spans = append(b.spans, span)
		}
		for _, rec := range recs[:len(recs)-1] {
			b.add(&b.index, rec, rec.Message(headers))
		}
		last := recs[len(recs)-1]
		b.add(&b.snapshots, last, last.Message(headers))
		b.next[e.UID] = next
		b.applied++
	}
	err := flush(len(records))
	return done, err
}

// endSpans ends the spans of b's events, marked failed with err if it is
// not nil, and forgets them.
func endSpans(b *batch, err error) {
	for _, span := range b.spans {
		kafkax.EndSpan(span, err)
	}
	b.spans = nil
}

// write sends b's records, the index records and the snapshots, in one
// write that is all or none. The snapshot topic is what State is restored
// from, so a snapshot that exists proves that everything for its event was
// written. Only then does State move to b's states; a crash before that
// folds the events again and writes the same records again, which is
// harmless.
func (p *Projector) write(b *batch) error {
	if len(b.snapshots) == 0 {
		return nil
	}
	began := time.Now()
	defer func() { batchSeconds.Observe(time.Since(began).Seconds()) }()
	if err := p.Producer.SendMessages(append(slices.Clip(b.index), b.snapshots...)); err != nil {
		return fmt.Errorf("write %d email index records and %d snapshots: %w", len(b.index), len(b.snapshots), err)
	}
	offsets := map[int32]int64{}
	for _, m := range b.snapshots {
		offsets[m.Partition] = max(offsets[m.Partition], m.Offset+1)
	}
	if err := p.State.Put(slices.Collect(maps.Values(b.next)), offsets); err != nil {
		// The snapshots are written; folding the batch again finds them
		// duplicates once the state has them, and rewrites them until then.
		return fmt.Errorf("keep the state of %d snapshots: %w", len(b.next), err)
	}
	eventsFolded.WithLabelValues("applied").Add(float64(b.applied))
	batchRecords.Observe(float64(len(b.index) + len(b.snapshots)))
	return nil
}

// poison sets r aside. It returns an error only when the record could not
// be recorded: a poison event is never dropped unrecorded.
func (p *Projector) poison(r *sarama.ConsumerMessage, reason error) error {
	p.Log.Error("setting a poison event aside", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", reason)
	if p.DeadLetters != nil {
		if err := p.DeadLetters.Send(topology.FromConsumerMessage(r), reason); err != nil {
			return err
		}
	}
	eventsFolded.WithLabelValues("poison").Inc()
	return nil
}

// ErrNotRestored is what the projector's readiness check reports until its
// State has been restored from the snapshot topic.
var ErrNotRestored = errors.New("state not restored from the snapshot topic yet")
