package projector

import (
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
