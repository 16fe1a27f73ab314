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

// keys are the data keys a test knows; any other uid's key is gone.
type keys map[string]*pii.DataKey

func (k keys) DataKey(uid string) (*pii.DataKey, error) {
	if dk, ok := k[uid]; ok {
		return dk, nil
	}
	return nil, pii.ErrNoKey
}

func (keys) Forget(string) {}

// A snapshot, or an index entry, whose data key is gone (its profile was
// deleted, in a later version whose tombstone has not been read yet) is
// kept as deleted at its version: never served as a live profile with
// empty fields.
func TestASnapshotWhoseKeyIsGoneIsDeleted(t *testing.T) {
	kek, _ := pii.NewKEK(make([]byte, pii.KeySize))
	const uid = "00000000-0000-4000-8000-000000000001"
	dk, _, err := kek.NewDataKey(uid)
	if err != nil {
		t.Fatal(err)
	}
	writer := pii.NewCodec(kek, keys{uid: dk})
	at := time.Unix(100, 0).UTC()
	prof := events.Profile{UID: uid, Username: "bob", Email: "b@m.c", Version: 4, CreatedAt: at, UpdatedAt: at, Sealed: true}
	value, err := writer.EncodeSnapshot(prof)
	if err != nil {
		t.Fatal(err)
	}
	header := []sarama.RecordHeader{{Key: []byte(events.HeaderVersion), Value: []byte("4")}}
	indexKey := topology.IndexKey(writer.EmailKey("b@m.c"), uid)

	for _, tc := range []struct {
		name  string
		keys  keys
		found bool // GET finds a live profile
	}{
		{"the key is there", keys{uid: dk}, true},
		{"the key is gone", keys{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			codec := pii.NewCodec(kek, tc.keys)
			store, err := view.Open("view", vfs.NewMem(), 1, codec, view.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			a := Applier{Codec: codec, Store: store, SnapshotsTopic: "snapshots", IndexTopic: "index", EventsTopic: "events",
				DeadLetters: &deadLetters{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			snap := &sarama.ConsumerMessage{Topic: "snapshots", Offset: 3, Key: []byte(uid), Value: value, Headers: []*sarama.RecordHeader{&header[0]}}
			entry := &sarama.ConsumerMessage{Topic: "index", Offset: 3, Key: []byte(indexKey), Value: value, Headers: []*sarama.RecordHeader{&header[0]}}
			if err := a.Handle(context.Background(), "snapshots", 0, []*sarama.ConsumerMessage{snap}); err != nil {
				t.Fatal(err)
			}
			if err := a.Handle(context.Background(), "index", 0, []*sarama.ConsumerMessage{entry}); err != nil {
				t.Fatal(err)
			}
			got, err := store.Get(uid)
			if err != nil {
				t.Fatal(err)
			}
			if live := !got.Deleted; live != tc.found || got.Version != 4 {
				t.Errorf("the view holds %+v; want version 4, live %t", got, tc.found)
			}
			if tc.found && got.Username != "bob" {
				t.Errorf("username %q, want bob", got.Username)
			}
			found, err := store.SearchEmail("b@m.c")
			if err != nil {
				t.Fatal(err)
			}
			if (len(found) == 1) != tc.found {
				t.Errorf("search finds %+v; want a live profile: %t", found, tc.found)
			}
		})
	}
}
