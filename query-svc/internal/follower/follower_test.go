package follower

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"profiles/events"
	"profiles/platform/pii"
	"profiles/platform/topology"
	"profiles/query-svc/internal/view"
)

type deadLetters struct{ sent []int64 }

func (d *deadLetters) Send(r topology.DeadRecord, _ error) error {
	d.sent = append(d.sent, r.Offset)
	return nil
}

func record(t *testing.T, offset int64, e events.Event) *sarama.ConsumerMessage {
	t.Helper()
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return &sarama.ConsumerMessage{Topic: "events", Partition: 0, Offset: offset, Key: []byte(e.UID), Value: b}
}

// Event log records become history entries; a poison record is counted and
// skipped, but not dead-lettered (the projector does that for the event
// log); they count as events read, not as snapshot records.
func TestHandleEventLog(t *testing.T) {
	kek, _ := pii.NewKEK(make([]byte, pii.KeySize)) // 32 bytes: cannot fail
	codec := pii.NewCodec(kek, nil)
	store, err := view.Open("view", vfs.NewMem(), 1, codec, view.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	dlq := &deadLetters{}
	a := Applier{Codec: codec, Store: store, SnapshotsTopic: "snapshots", IndexTopic: "index", EventsTopic: "events", DeadLetters: dlq,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	at := time.Unix(100, 0).UTC()
	recs := []*sarama.ConsumerMessage{
		record(t, 5, events.Event{ID: "1", Type: events.TypeProfileCreated, UID: "u", Version: 1, OccurredAt: at, SchemaVersion: events.SchemaVersion,
			Data: events.ProfileCreated{Username: "bob", Email: "b@m.c"}}),
		{Topic: "events", Offset: 6, Key: []byte("u"), Value: []byte("not an event")},
		record(t, 7, events.Event{ID: "2", Type: events.TypeProfileDeleted, UID: "u", Version: 2, OccurredAt: at, SchemaVersion: events.SchemaVersion,
			Data: events.ProfileDeleted{}}),
	}
	snapshotsBefore, eventsBefore, poisonBefore := testutil.ToFloat64(recordsRead), testutil.ToFloat64(eventsRead), testutil.ToFloat64(recordsSkipped)
	if err := a.Handle(context.Background(), "events", 0, recs); err != nil {
		t.Fatal(err)
	}
	hist, err := store.History("u")
	if err != nil || len(hist) != 2 || hist[0].Type != events.TypeProfileCreated || hist[1].Type != events.TypeProfileDeleted {
		t.Fatalf("History = %+v, %v", hist, err)
	}
	if off, ok, _ := store.Offset("events", 0); !ok || off != 8 {
		t.Fatalf("offset = %d, %v; want 8", off, ok)
	}
	if len(dlq.sent) != 0 {
		t.Fatalf("dead letters = %v, want none", dlq.sent)
	}
	if n := testutil.ToFloat64(recordsSkipped) - poisonBefore; n != 1 {
		t.Fatalf("poison records = %v, want 1", n)
	}
	if n := testutil.ToFloat64(eventsRead) - eventsBefore; n != 3 {
		t.Fatalf("events read = %v, want 3", n)
	}
	if n := testutil.ToFloat64(recordsRead) - snapshotsBefore; n != 0 {
		t.Fatalf("snapshot records read = %v, want 0", n)
	}
}
