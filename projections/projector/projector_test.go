package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/platform/pebblex"
	"profiles/platform/pii"
	"profiles/platform/topology"
	"profiles/projections/projection"
)

// testCodec encodes snapshots in clear and keys an email by its normalized
// form, so that the index keys of a test can be read.
type testCodec struct{}

func (testCodec) EncodeSnapshot(p events.Profile) ([]byte, error) { return events.EncodeSnapshot(p) }
func (testCodec) EmailKey(email string) string                    { return events.NormalizeEmail(email) }

// indexRecords returns the records the projector writes to the email
// index for e from prev.
func indexRecords(t *testing.T, c projection.Codec, e events.Event, prev, next events.Profile) []projection.Record {
	t.Helper()
	recs, err := projection.Step(c, projection.Target{Snapshots: "snaps", EmailIndex: "index"}, prev, next, &e)
	if err != nil {
		t.Fatal(err)
	}
	var out []projection.Record
	for _, r := range recs {
		if r.Topic == "index" {
			out = append(out, r)
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
				email, uid, _ := topology.SplitIndexKey([]byte(m.Key))
				if uid != "u" {
					t.Fatalf("index key for uid %q", uid)
				}
				if m.Value == nil {
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
		k := m.Key
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

// published records what the projector writes, and must see nothing
// here.
type published struct{ msgs []*sarama.ProducerMessage }

func (p *published) SendMessages(msgs []*sarama.ProducerMessage) error {
	p.msgs = append(p.msgs, msgs...)
	return nil
}

// deadLetters records what is set aside, and must see nothing here.
type deadLetters struct{ sent int }

func (d *deadLetters) Send(topology.DeadRecord, error) error { d.sent++; return nil }

// A snapshot whose data key cannot be read yet is retried (fold returns
// the error with nothing done, and Handle folds it again), never set
// aside as poison.
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
		Producer: pub, DeadLetters: dlq, State: newState(t, "snaps"), Codec: pii.NewCodec(kek, &flakyKeys{dk: dk}),
		EventsTopic: "events", SnapshotsTopic: "snaps", EmailIndexTopic: "index", Log: slog.New(slog.DiscardHandler),
	}
	done, err := p.fold(context.Background(), 0, []*sarama.ConsumerMessage{{Topic: "events", Value: value}})
	if !errors.Is(err, pii.ErrKeyUnavailable) || done != 0 || len(pub.msgs) != 0 || dlq.sent != 0 || getState(t, p.State, uid).Version != 0 {
		t.Fatalf("fold = %d, %v, %d published, %d dead letters, state v%d: want ErrKeyUnavailable and nothing written",
			done, err, len(pub.msgs), dlq.sent, getState(t, p.State, uid).Version)
	}
}

// memKeys holds data keys in memory.
type memKeys map[string]*pii.DataKey

func (k memKeys) DataKey(uid string) (*pii.DataKey, error) {
	if dk, ok := k[uid]; ok {
		return dk, nil
	}
	return nil, pii.ErrNoKey
}

func (memKeys) Forget(string) {}

// sends records each SendMessages call, and fails the calls listed in
// fail (1-based).
type sends struct {
	calls [][]*sarama.ProducerMessage
	fail  map[int]bool
}

func (s *sends) SendMessages(msgs []*sarama.ProducerMessage) error {
	s.calls = append(s.calls, msgs)
	if s.fail[len(s.calls)] {
		return errors.New("broker unreachable")
	}
	return nil
}

// topics is each call's topics, one letter per record: i(ndex) or s(napshot).
func (s *sends) topics() []string {
	var out []string
	for _, c := range s.calls {
		t := ""
		for _, m := range c {
			t += m.Topic[:1]
		}
		out = append(out, t)
	}
	return out
}

// A batch is folded in memory and written with one call, its email index
// records and its snapshots, whatever its size; a poison
// event is set aside in its place and a redelivered one skipped. A write
// that fails is folded again from the first record not written, and
// State moves only with what was written.
func TestABatchIsOneWriteAndAFailedOneIsFoldedAgain(t *testing.T) {
	kek, err := pii.NewKEK(make([]byte, pii.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	keys := memKeys{}
	codec := pii.NewCodec(kek, keys)
	at := time.Unix(0, 0)
	var records []*sarama.ConsumerMessage
	add := func(e events.Event) {
		if keys[e.UID] == nil {
			dk, _, err := kek.NewDataKey(e.UID)
			if err != nil {
				t.Fatal(err)
			}
			keys[e.UID] = dk
		}
		value, err := codec.EncodeEvent(e, keys[e.UID])
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, &sarama.ConsumerMessage{Topic: "events", Offset: int64(len(records)), Value: value})
	}
	uids := []string{"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"}
	created := make([]events.Profile, len(uids))
	for i, uid := range uids {
		e := events.New("c"+uid, events.Profile{}, uid, events.ProfileCreated{Username: "bob", Email: uid + "@example.com"}, at)
		add(e)
		if created[i], err = events.Apply(events.Profile{}, e); err != nil {
			t.Fatal(err)
		}
	}
	add(events.New("dup", events.Profile{}, uids[0], events.ProfileCreated{Username: "bob", Email: "x@example.com"}, at)) // version 1 again: a redelivery
	records = append(records, &sarama.ConsumerMessage{Topic: "events", Offset: int64(len(records)), Value: []byte("not an event")})
	add(events.New("ch", created[1], uids[1], events.EmailChanged{Email: "new@example.com"}, at))

	tests := []struct {
		name   string
		fail   map[int]bool
		writes []string // per SendMessages call
	}{
		// Up to the poison: 2 index records, 2 snapshots. After it: the
		// email change unindexes and indexes, and its snapshot.
		{"every write succeeds", nil, []string{"iiss", "iis"}},
		{"a failed first write is written again", map[int]bool{1: true}, []string{"iiss", "iiss", "iis"}},
		{"a failed last write is written again", map[int]bool{2: true}, []string{"iiss", "iis", "iis"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, dlq := &sends{fail: tt.fail}, &deadLetters{}
			p := &Projector{
				Producer: out, DeadLetters: dlq, State: newState(t, "snaps"), Codec: codec, RetryBackoff: time.Millisecond,
				EventsTopic: "events", SnapshotsTopic: "snaps", EmailIndexTopic: "index", Log: slog.New(slog.DiscardHandler),
			}
			if err := p.Handle(context.Background(), "events", 0, records); err != nil {
				t.Fatal(err)
			}
			if got := out.topics(); strings.Join(got, ",") != strings.Join(tt.writes, ",") {
				t.Fatalf("writes %v, want %v", got, tt.writes)
			}
			if dlq.sent != 1 {
				t.Fatalf("%d dead letters, want the one poison event", dlq.sent)
			}
			if v := getState(t, p.State, uids[0]).Version; v != 1 {
				t.Fatalf("%s at v%d, want v1", uids[0], v)
			}
			if got := getState(t, p.State, uids[1]); got.Version != 2 || got.Email != "new@example.com" {
				t.Fatalf("%s is %+v, want v2 with the new email", uids[1], got)
			}
		})
	}
}

// newState returns an empty state of topic in a store in memory, closed at
// the end of t.
func newState(t *testing.T, topic string) *State {
	t.Helper()
	db, err := pebblex.Open("state", vfs.NewMem(), pebblex.Options{What: "the projector's state", Layout: StateLayout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := OpenState(db, topic)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func getState(t *testing.T, s *State, uid string) events.Profile {
	t.Helper()
	p, err := s.Get(uid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A batch writes only the last state of each profile and index entry: the
// events of one command (a PUT that changes username and email) come in
// one batch, and no reader may see the state between them.
func TestABatchWritesTheLastStateOfEachKeyOnly(t *testing.T) {
	kek, err := pii.NewKEK(make([]byte, pii.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	keys := memKeys{}
	codec := pii.NewCodec(kek, keys)
	uid := "00000000-0000-4000-8000-000000000003"
	dk, _, err := kek.NewDataKey(uid)
	if err != nil {
		t.Fatal(err)
	}
	keys[uid] = dk
	var records []*sarama.ConsumerMessage
	state := events.Profile{}
	for _, data := range []events.Payload{
		events.ProfileCreated{Username: "bob", Email: "old@example.com"},
		events.UsernameChanged{Username: "rob"},
		events.EmailChanged{Email: "new@example.com"},
	} {
		e := events.New(fmt.Sprint("e", state.Version), state, uid, data, time.Unix(0, 0))
		if state, err = events.Apply(state, e); err != nil {
			t.Fatal(err)
		}
		value, err := codec.EncodeEvent(e, dk)
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, &sarama.ConsumerMessage{Topic: "events", Offset: int64(len(records)), Value: value})
	}
	out := &sends{}
	p := &Projector{
		Producer: out, DeadLetters: &deadLetters{}, State: newState(t, "snaps"), Codec: codec, RetryBackoff: time.Millisecond,
		EventsTopic: "events", SnapshotsTopic: "snaps", EmailIndexTopic: "index", Log: slog.New(slog.DiscardHandler),
	}
	if err := p.Handle(context.Background(), "events", 0, records); err != nil {
		t.Fatal(err)
	}
	// The old email's entry (indexed, re-indexed, then unindexed) and the
	// new one's; one snapshot, at version 3.
	if got := strings.Join(out.topics(), ","); got != "iis" {
		t.Fatalf("writes %s, want iis", got)
	}
	snap := out.calls[0][2]
	if v := headerOf(snap, events.HeaderVersion); v != "3" {
		t.Fatalf("the snapshot written is of version %q, want 3", v)
	}
	if got := getState(t, p.State, uid); got.Version != 3 || got.Username != "rob" || got.Email != "new@example.com" {
		t.Fatalf("state %+v", got)
	}
}

func headerOf(m *sarama.ProducerMessage, key string) string {
	for _, h := range m.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}
