package projector

import (
	"testing"
	"time"

	"profiles/events"
	"profiles/platform/kafkax"
)

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
			value, _ := events.EncodeSnapshot(next)
			var got []string
			for _, m := range indexRecords(e, tt.prev, next, map[string]string{}, value) {
				email, uid, _ := kafkax.SplitIndexKey([]byte(m.Metadata.Get(kafkax.KeyMetadata)))
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
