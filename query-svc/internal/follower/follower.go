// Package follower keeps query-svc's view in step with the snapshot topic,
// the email index topic and the event log (for the history): either for
// the partitions this instance owns in its consumer group (Applier's
// callbacks of kafkax.Group), or for every partition (Replica, the
// full-replica mode).
package follower

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
	"profiles/query-svc/internal/app"
	"profiles/query-svc/internal/view"
)

var (
	recordsRead = promauto.NewCounter(prometheus.CounterOpts{
		Name: "profiles_query_snapshot_records_read_total",
		Help: "Snapshot and email index records read from Kafka since the process started (after a cheap restart it counts only the tail).",
	})
	eventsRead = promauto.NewCounter(prometheus.CounterOpts{
		Name: "profiles_query_events_read_total",
		Help: "Event log records read from Kafka (for the history) since the process started.",
	})
	recordsSkipped = promauto.NewCounter(prometheus.CounterOpts{
		Name: "profiles_query_snapshot_records_poison_total",
		Help: "Records that could not be decoded and were skipped.",
	})
)

// Store is what the follower needs of the view.
type Store interface {
	Offset(topic string, p int32) (int64, bool, error)
	ApplySnapshots(topic string, p int32, profiles []events.Profile, next int64) (int, error)
	ApplyIndex(topic string, p int32, entries []view.IndexEntry, next int64) (int, error)
	ApplyEvents(topic string, p int32, records []view.HistoryRecord, next int64) (int, error)
	Held() (map[string][]int32, error)
	DropPartition(p int32) error
}

// DeadLetterSink sets aside a record that cannot be used (see
// topology.DeadLetters).
type DeadLetterSink interface {
	Send(r topology.DeadRecord, reason error) error
}

// Applier decodes records of the three topics and applies them to the view.
type Applier struct {
	// Codec opens the sealed records read.
	Codec          *pii.Codec
	Store          Store
	SnapshotsTopic string
	IndexTopic     string
	EventsTopic    string
	// DeadLetters receives undecodable records of the snapshot topic and
	// the email index; nil only logs them.
	DeadLetters DeadLetterSink
	Log         *slog.Logger
}

// Start returns the offset to resume topic/p from: the view's own, or the
// beginning when the view holds nothing of it.
func (a Applier) Start(topic string, p int32) (int64, error) {
	off, ok, err := a.Store.Offset(topic, p)
	if err != nil {
		return 0, err
	}
	if !ok {
		return sarama.OffsetOldest, nil
	}
	return off, nil
}

// Handle applies one batch of records of topic/p. Undecodable records are
// logged, counted and skipped; the offset moves past them.
//
// Each record that carries a trace context (a write's, through the
// projector) gets a span "process <topic>" in that trace, from the start
// of the batch to the end of its apply (kafkax.StartProcessSpans); with
// tracing off, none.
func (a Applier) Handle(ctx context.Context, topic string, p int32, records []*sarama.ConsumerMessage) (err error) {
	spans := kafkax.StartProcessSpans(ctx, records)
	defer func() { spans.End(err) }()
	next := records[len(records)-1].Offset + 1
	switch topic {
	case a.SnapshotsTopic:
		profiles := make([]events.Profile, 0, len(records))
		for _, r := range records {
			prof, derr := a.Codec.DecodeSnapshot(string(r.Key), r.Value, kafkax.HeaderValue(r, events.HeaderVersion))
			if errors.Is(derr, pii.ErrKeyUnavailable) {
				return derr // kafkax.Group hands the batch over again; nothing is skipped
			}
			if a.skip(r, derr, a.DeadLetters) {
				continue
			}
			profiles = append(profiles, erasedIsDeleted(prof))
		}
		_, err = a.Store.ApplySnapshots(topic, p, profiles, next)
	case a.IndexTopic:
		entries := make([]view.IndexEntry, 0, len(records))
		for _, r := range records {
			email, uid, ok := topology.SplitIndexKey(r.Key)
			var prof events.Profile
			derr := fmt.Errorf("%w: index key %q is not email\\0uid", events.ErrSnapshot, r.Key)
			if ok {
				prof, derr = a.Codec.DecodeSnapshot(uid, r.Value, kafkax.HeaderValue(r, events.HeaderVersion))
			}
			if errors.Is(derr, pii.ErrKeyUnavailable) {
				return derr
			}
			if a.skip(r, derr, a.DeadLetters) {
				continue
			}
			entries = append(entries, view.IndexEntry{Email: email, Profile: erasedIsDeleted(prof)})
		}
		_, err = a.Store.ApplyIndex(topic, p, entries, next)
	case a.EventsTopic:
		hist := make([]view.HistoryRecord, 0, len(records))
		for _, r := range records {
			e, derr := a.Codec.DecodeEvent(r.Value)
			var entry app.HistoryEntry
			if derr == nil {
				entry, derr = app.NewHistoryEntry(e)
			}
			// A poison event is only logged and counted here: the projector
			// sets the event log's poison aside (command-svc skips it too),
			// and query-svc reads a partition again after every move, which
			// would dead-letter the same record over and over.
			if errors.Is(derr, pii.ErrKeyUnavailable) {
				return derr
			}
			if a.skip(r, derr, nil) {
				continue
			}
			hist = append(hist, view.HistoryRecord{UID: e.UID, Entry: entry})
		}
		if _, err := a.Store.ApplyEvents(topic, p, hist, next); err != nil {
			return err
		}
		eventsRead.Add(float64(len(records))) // not recordsRead: that one counts the snapshot side only
		return nil
	default:
		return fmt.Errorf("unexpected topic %s", topic)
	}
	if err == nil {
		recordsRead.Add(float64(len(records)))
	}
	return err
}

// erasedIsDeleted returns prof, marked deleted when its personal data was
// sealed with a data key that is gone. Only a profile's delete shreds its
// key, in the transaction of the ProfileDeleted event, so the profile is
// deleted at a later version, whose tombstone follows: served, the
// snapshot would be a live profile with empty fields, a state that no
// write ever made (a reader that lags the keyring sees it, for example
// after the projector was held up and writes an older version after the
// delete). The view keeps it as deleted at its version instead, which is
// the truth by then.
func erasedIsDeleted(prof events.Profile) events.Profile {
	if prof.Erased {
		prof.Deleted = true
	}
	return prof
}

// skip reports whether r is poison (err != nil); it logs it, counts it and,
// with a sink, sets it aside in the dead-letter topic. The view moves past
// it either way: the record also stays where it is.
func (a Applier) skip(r *sarama.ConsumerMessage, err error, sink DeadLetterSink) bool {
	if err == nil {
		return false
	}
	recordsSkipped.Inc()
	a.Log.Error("skipping undecodable record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
	if sink != nil {
		if derr := sink.Send(topology.FromConsumerMessage(r), err); derr != nil {
			a.Log.Error("cannot set the record aside in the dead-letter topic", "err", derr)
		}
	}
	return true
}

// Assigned drops the data of every partition the view holds but this
// instance no longer owns, so that its store holds only what it serves.
func (a Applier) Assigned(owned []int32) {
	keep := map[int32]bool{}
	for _, p := range owned {
		keep[p] = true
	}
	held, err := a.Store.Held()
	if err != nil {
		a.Log.Error("cannot list the view's partitions", "err", err)
		return
	}
	dropped := map[int32]bool{}
	for _, parts := range held {
		for _, p := range parts {
			if !keep[p] && !dropped[p] {
				dropped[p] = true
				if err := a.Store.DropPartition(p); err != nil {
					a.Log.Error("cannot drop a partition that moved away", "partition", p, "err", err)
				}
			}
		}
	}
	if len(dropped) > 0 {
		a.Log.Info("dropped the data of partitions that moved to other instances", "partitions", len(dropped))
	}
}

// Replica follows every partition of the three topics: the full-replica
// mode, where every instance answers every read locally. kafkax.Read's
// idle rule lets a partition of the event log, whose end counts the
// transaction markers, catch up.
type Replica struct {
	Applier
	Client sarama.Client

	mu      sync.Mutex
	started bool
	behind  map[string]int
}

// Ready reports nil once every partition of the three topics has caught up
// with the end it had at start.
func (r *Replica) Ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.started {
		return fmt.Errorf("not started")
	}
	for topic, n := range r.behind {
		if n > 0 {
			return fmt.Errorf("%d partitions of %s catching up", n, topic)
		}
	}
	return nil
}

// Serving is true for every partition once the replica is ready.
func (r *Replica) Serving(int32) bool { return r.Ready() == nil }

// Run follows the three topics until ctx ends.
func (r *Replica) Run(ctx context.Context) error {
	topics := []string{r.SnapshotsTopic, r.IndexTopic, r.EventsTopic}
	r.mu.Lock()
	r.behind = map[string]int{}
	for _, t := range topics {
		parts, err := r.Client.Partitions(t)
		if err != nil {
			r.mu.Unlock()
			return err
		}
		r.behind[t] = len(parts)
	}
	r.started = true
	r.mu.Unlock()

	// One consumer for the three topics: a commit to any of them wakes one
	// fetch, not one per topic.
	fetcher, err := kafkax.NewFetcher(r.Client)
	if err != nil {
		return fmt.Errorf("consumer of the replica: %w", err)
	}
	defer fetcher.Close() // after every Read has returned: errc below
	errc := make(chan error, len(topics))
	for _, topic := range topics {
		go func() {
			errc <- kafkax.Read(ctx, r.Client, kafkax.ReadOptions{
				Topic:   topic,
				Fetcher: fetcher,
				Start:   func(p int32) (int64, error) { return r.Start(topic, p) },
				Handle: func(ctx context.Context, p int32, recs []*sarama.ConsumerMessage) error {
					return r.Handle(ctx, topic, p, recs)
				},
				CaughtUp: func(int32) {
					r.mu.Lock()
					r.behind[topic]--
					r.mu.Unlock()
				},
			})
		}()
	}
	var first error
	for range topics {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}
