package changes

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"profiles/events"
	"profiles/platform/pii"
)

func TestWriterEvent(t *testing.T) {
	tests := []struct {
		name, id, event, data, want string
	}{
		{"full", "g1:0=5", "profile", `{"uid":"a"}`, "id: g1:0=5\nevent: profile\ndata: {\"uid\":\"a\"}\n\n"},
		{"no id", "", "ready", `{}`, "event: ready\ndata: {}\n\n"},
		{"no event type", "g1:0=1", "", `x`, "id: g1:0=1\ndata: x\n\n"},
		{"empty data", "g1:0=1", "deleted", ``, "id: g1:0=1\nevent: deleted\ndata: \n\n"},
		{"multi-line data", "", "", "a\nb\r\nc\rd", "data: a\ndata: b\ndata: c\ndata: d\n\n"},
		{"trailing newline", "", "", "a\n", "data: a\ndata: \n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			w := &Writer{W: &b}
			if err := w.Event(tt.id, tt.event, []byte(tt.data)); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Fatalf("wrote %q, want %q", b.String(), tt.want)
			}
		})
	}
}

func TestWriterCommentAndRetry(t *testing.T) {
	var b bytes.Buffer
	w := &Writer{W: &b}
	if err := w.Comment("keepalive"); err != nil {
		t.Fatal(err)
	}
	if err := w.Comment("two\nlines"); err != nil {
		t.Fatal(err)
	}
	if err := w.Retry(1500); err != nil {
		t.Fatal(err)
	}
	if want := ": keepalive\n\n: two lines\n\nretry: 1500\n\n"; b.String() != want {
		t.Fatalf("wrote %q, want %q", b.String(), want)
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("gone") }

func TestWriterErrors(t *testing.T) {
	w := &Writer{W: failing{}}
	if w.Event("1", "x", nil) == nil || w.Comment("x") == nil || w.Retry(1) == nil {
		t.Fatal("a write error was not returned")
	}
}

func TestDecode(t *testing.T) {
	uid := "74292b21-0fbb-4f1d-a18f-fa80f947fa5d"
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	prof := events.Profile{UID: uid, Username: "bob", DisplayName: "Bob", Email: "bob@example.com", Version: 3, CreatedAt: at, UpdatedAt: at}
	value, _ := events.EncodeSnapshot(prof)
	hdr := []*sarama.RecordHeader{{Key: []byte(events.HeaderVersion), Value: []byte("4")}}
	tests := []struct {
		name    string
		rec     *sarama.ConsumerMessage
		event   string
		json    string
		wantErr bool
	}{
		{"profile", &sarama.ConsumerMessage{Key: []byte(uid), Value: value, Partition: 2, Offset: 17}, EventProfile,
			`{"uid":"` + uid + `","version":3,"deleted":false,"profile":{"uid":"` + uid + `","username":"bob","displayName":"Bob","email":"bob@example.com","version":3,"createdAt":"2026-01-02T03:04:05Z","updatedAt":"2026-01-02T03:04:05Z"},"partition":2,"offset":17}`, false},
		{"tombstone", &sarama.ConsumerMessage{Key: []byte(uid), Headers: hdr, Partition: 1, Offset: 9}, EventDeleted,
			`{"uid":"` + uid + `","version":4,"deleted":true,"profile":null,"partition":1,"offset":9}`, false},
		{"garbage", &sarama.ConsumerMessage{Key: []byte(uid), Value: []byte("{nope")}, "", "", true},
		{"no key", &sarama.ConsumerMessage{Value: value}, "", "", true},
		{"another uid's profile", &sarama.ConsumerMessage{Key: []byte("00000000-0000-4000-8000-000000000000"), Value: value}, "", "", true},
	}
	kek, _ := pii.NewKEK(make([]byte, pii.KeySize)) // 32 bytes: cannot fail
	codec := pii.NewCodec(kek, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, event, err := Decode(codec, tt.rec)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Decode = %+v, want an error", c)
				}
				return
			}
			if err != nil || event != tt.event {
				t.Fatalf("Decode = %q, %v; want %q", event, err, tt.event)
			}
			if got := string(JSON(c)); got != tt.json {
				t.Fatalf("data = %s\nwant   %s", got, tt.json)
			}
			var back Change
			if err := json.Unmarshal(JSON(c), &back); err != nil || back.UID != uid {
				t.Fatalf("round trip: %+v %v", back, err)
			}
		})
	}
}

// keysOf gives the data keys it holds, and for any other uid an error
// that is not ErrNoKey: the key cannot be read yet.
type keysOf map[string]*pii.DataKey

func (k keysOf) DataKey(uid string) (*pii.DataKey, error) {
	if dk, ok := k[uid]; ok {
		return dk, nil
	}
	return nil, errors.New("keys partition unreachable")
}

func (keysOf) Forget(string) {}

// DecodeAll hands over a batch up to the first record whose key cannot be
// read yet, and not the records after it: that record ends the stream,
// and none after it waits for a key of its own.
func TestDecodeAllStopsAtTheFirstUnavailableKey(t *testing.T) {
	kek, _ := pii.NewKEK(make([]byte, pii.KeySize)) // 32 bytes: cannot fail
	const known, unknown = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	all := keysOf{}
	for _, uid := range []string{known, unknown} {
		dk, _, err := kek.NewDataKey(uid)
		if err != nil {
			t.Fatal(err)
		}
		all[uid] = dk
	}
	seal, keys := pii.NewCodec(kek, all), keysOf{known: all[known]}
	var recs []*sarama.ConsumerMessage
	for i, uid := range []string{known, unknown, known} {
		value, err := seal.EncodeSnapshot(events.Profile{UID: uid, Username: "bob", Email: "bob@example.com", Version: 1, CreatedAt: at, UpdatedAt: at, Sealed: true})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &sarama.ConsumerMessage{Key: []byte(uid), Value: value, Offset: int64(i)})
	}
	got := DecodeAll(pii.NewCodec(kek, keys), recs)
	if len(got) != 2 || got[0].Err != nil || got[0].Change.Profile == nil || got[0].Change.Profile.Username != "bob" ||
		!errors.Is(got[1].Err, pii.ErrKeyUnavailable) || got[1].Offset != 1 {
		t.Fatalf("DecodeAll = %+v, want the first record opened and the second unavailable, and no third", got)
	}
}
