package projector

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/topology"
	"profiles/projections/projection"
)

// testCodec encodes snapshots in clear and keys an email by its normalized
// form, so that the index keys of a test can be read.
type testCodec struct{}

func (testCodec) EncodeSnapshot(p events.Profile) ([]byte, error) { return events.EncodeSnapshot(p) }
func (testCodec) EmailKey(email string) string                    { return events.NormalizeEmail(email) }

// indexRecords returns the messages the projector publishes to the email
// index for e from prev.
func indexRecords(t *testing.T, c projection.Codec, e events.Event, prev, next events.Profile) []*message.Message {
	t.Helper()
	recs, err := projection.Step(c, projection.Target{Snapshots: "snaps", EmailIndex: "index"}, prev, next, &e)
	if err != nil {
		t.Fatal(err)
	}
	var out []*message.Message
	for _, r := range recs {
		if r.Topic == "index" {
			out = append(out, newMessage(r))
		}
	}
	return out
}

func TestIndexRecords(t *testing.T) {
	at := time.Unix(0, 0)
	live := events.Profile{UID: "u", Username: "bob", Email: "Bob1@Mail.com", Version: 1}
	tests := []struct {
		name string
		prev events.Profile
		data events.Payload
		want []string // keys; "-" marks a tombstone
	}{
		{"create indexes the new email", events.Profile{}, events.ProfileCreated{Username: "bob", Email: "Bob1@Mail.com"}, []string{"bob1@mail.com"}},
		{"username change re-indexes the same email", live, events.UsernameChanged{Username: "rob"}, []string{"bob1@mail.com"}},
		{"email change unindexes the old email", live, events.EmailChanged{Email: "bob2@mail.com"}, []string{"-bob1@mail.com", "bob2@mail.com"}},
		{"case-only change keeps one entry", live, events.EmailChanged{Email: "bob1@mail.com"}, []string{"bob1@mail.com"}},
		{"delete unindexes", live, events.ProfileDeleted{}, []string{"-bob1@mail.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := events.New("e", tt.prev, "u", tt.data, at)
			next, err := events.Apply(tt.prev, e)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range indexRecords(t, testCodec{}, e, tt.prev, next) {
				email, uid, _ := topology.SplitIndexKey([]byte(m.Metadata.Get(kafkax.KeyMetadata)))
				if uid != "u" {
					t.Fatalf("index key for uid %q", uid)
				}
				if m.Payload == nil {
					email = "-" + email
				}
				got = append(got, email)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("index records %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("index records %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestIndexKeysAreHMACsOfTheEmailNotTheEmail(t *testing.T) {
	kek, err := pii.NewKEK(make([]byte, pii.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	key := pii.NewCodec(kek, nil)
	live := events.Profile{UID: "u", Username: "bob", Email: "Bob1@Mail.com", Version: 1}
	e := events.New("e", live, "u", events.EmailChanged{Email: "bob2@mail.com"}, time.Unix(0, 0))
	next, err := events.Apply(live, e)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range indexRecords(t, key, e, live, next) {
		k := m.Metadata.Get(kafkax.KeyMetadata)
		if strings.Contains(strings.ToLower(k), "bob") {
			t.Fatalf("index key %q holds the email", k)
		}
		email, _, _ := topology.SplitIndexKey([]byte(k))
		got = append(got, email)
	}
	if want := []string{kek.EmailHash("bob1@mail.com"), kek.EmailHash("bob2@mail.com")}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("index keys %v, want %v", got, want)
	}
}

// flakyKeys gives uid's key once, and then answers that it cannot be read
// yet: the keys topic became unreachable between the decode of an event
// and the sealing of its snapshot.
type flakyKeys struct {
	dk    *pii.DataKey
	calls int
}

func (k *flakyKeys) DataKey(string) (*pii.DataKey, error) {
	if k.calls++; k.calls > 1 {
		return nil, errors.New("keys partition unreachable")
	}
	return k.dk, nil
}

func (*flakyKeys) Forget(string) {}

// published records what the projector publishes, and must see nothing
// here.
type published struct{ msgs []*message.Message }

func (p *published) Publish(_ string, msgs ...*message.Message) error {
	p.msgs = append(p.msgs, msgs...)
	return nil
}
func (*published) Close() error { return nil }

// deadLetters records what is set aside, and must see nothing here.
type deadLetters struct{ sent int }

func (d *deadLetters) Send(topology.DeadRecord, error) error { d.sent++; return nil }

// A snapshot whose data key cannot be read yet is retried (handle returns
// the error, and the event is redelivered), never set aside as poison.
func TestASnapshotWithoutItsKeyYetIsRetriedNotPoison(t *testing.T) {
	kek, err := pii.NewKEK(make([]byte, pii.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	const uid = "00000000-0000-4000-8000-000000000001"
	dk, _, err := kek.NewDataKey(uid)
	if err != nil {
		t.Fatal(err)
	}
	e := events.New("e1", events.Profile{}, uid, events.ProfileCreated{Username: "bob", Email: "bob@example.com"}, time.Unix(0, 0))
	value, err := pii.NewCodec(kek, &flakyKeys{dk: dk}).EncodeEvent(e, dk)
	if err != nil {
		t.Fatal(err)
	}
	pub, dlq := &published{}, &deadLetters{}
	p := &Projector{
		Publisher: pub, DeadLetters: dlq, State: NewState(), Codec: pii.NewCodec(kek, &flakyKeys{dk: dk}),
		EventsTopic: "events", SnapshotsTopic: "snaps", EmailIndexTopic: "index", Log: slog.New(slog.DiscardHandler),
	}
	err = p.handle(context.Background(), message.NewMessage("m1", value))
	if !errors.Is(err, pii.ErrKeyUnavailable) || len(pub.msgs) != 0 || dlq.sent != 0 || p.State.Get(uid).Version != 0 {
		t.Fatalf("handle = %v, %d published, %d dead letters, state v%d: want ErrKeyUnavailable and nothing written",
			err, len(pub.msgs), dlq.sent, p.State.Get(uid).Version)
	}
}
