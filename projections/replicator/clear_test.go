package replicator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/IBM/sarama/mocks"

	"profiles/events"
	"profiles/platform/pii"
)

// clearKeys is an in-memory pii.Keys; a uid without a key is shredded.
type clearKeys map[string]*pii.DataKey

func (m clearKeys) DataKey(uid string) (*pii.DataKey, error) {
	if dk := m[uid]; dk != nil {
		return dk, nil
	}
	return nil, pii.ErrNoKey
}

func (m clearKeys) Forget(uid string) { delete(m, uid) }

// brokenKeys cannot read any key yet.
type brokenKeys struct{}

func (brokenKeys) DataKey(string) (*pii.DataKey, error) {
	return nil, errors.New("keys topic unreachable")
}
func (brokenKeys) Forget(string) {}

// sealedSnap is the sealed snapshot record of a live profile, as the
// projector writes it.
func sealedSnap(t *testing.T, codec *pii.Codec, uid string, v int64, username, email string) *sarama.ConsumerMessage {
	t.Helper()
	var plain events.Profile
	if err := json.Unmarshal(pgSnap(uid, v, username, email).Value, &plain); err != nil {
		t.Fatal(err)
	}
	plain.Sealed = true
	b, err := codec.EncodeSnapshot(plain)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(email)) {
		t.Fatalf("the sealed snapshot holds the email in clear: %s", b)
	}
	return &sarama.ConsumerMessage{Key: []byte(uid), Value: b, Headers: pgVersionHeader(v)}
}

func TestClearRecordsOpenSealedSnapshotsAndKeepTombstones(t *testing.T) {
	kek, err := pii.NewKEK(bytes.Repeat([]byte{7}, pii.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	keys := clearKeys{}
	for _, uid := range []string{"u-live", "u-gone"} {
		if keys[uid], _, err = kek.NewDataKey(uid); err != nil {
			t.Fatal(err)
		}
	}
	codec := pii.NewCodec(kek, keys)
	live := sealedSnap(t, codec, "u-live", 2, "ada", "ada@example.com")
	gone := sealedSnap(t, codec, "u-gone", 1, "bob", "bob@example.com")
	keys.Forget("u-gone") // deleted: its key is shredded

	convert := func(r *sarama.ConsumerMessage) *sarama.ProducerMessage {
		t.Helper()
		m, err := clearRecord(codec, "clear", "snaps", 3, r, slog.Default())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	m := convert(live)
	if m.Topic != "clear" || m.Partition != 3 || string(m.Key.(sarama.StringEncoder)) != "u-live" {
		t.Fatalf("record %s/%d key %v", m.Topic, m.Partition, m.Key)
	}
	value, _ := m.Value.Encode()
	var got map[string]any
	if err := json.Unmarshal(value, &got); err != nil {
		t.Fatal(err)
	}
	if got["uid"] != "u-live" || got["username"] != "ada" || got["email"] != "ada@example.com" ||
		got["displayName"] != "D ada" || got["version"] != 2.0 || got["createdAt"] == nil {
		t.Fatalf("clear value %s", value)
	}
	if strings.Contains(string(value), "pii") || strings.Contains(string(value), "sealed") {
		t.Fatalf("clear value carries sealing fields: %s", value)
	}
	if len(m.Headers) != 1 || string(m.Headers[0].Value) != "2" {
		t.Fatalf("headers %v", m.Headers)
	}

	// A snapshot whose key is shredded writes nothing: no empty profile.
	if m := convert(gone); m != nil {
		t.Fatalf("erased snapshot written as %+v", m)
	}
	// Its tombstone is a tombstone with the version.
	tomb := convert(pgTomb("u-gone", 2))
	if tomb == nil || tomb.Value != nil || string(tomb.Key.(sarama.StringEncoder)) != "u-gone" || string(tomb.Headers[0].Value) != "2" {
		t.Fatalf("tombstone %+v", tomb)
	}
	// A record that is not a snapshot is skipped.
	if m := convert(&sarama.ConsumerMessage{Key: []byte("u-x"), Value: []byte("{not json")}); m != nil {
		t.Fatalf("bad record written as %+v", m)
	}
	// A key that cannot be read yet fails the batch (retried), rather than
	// skipping the profile.
	if _, err := clearRecord(pii.NewCodec(kek, brokenKeys{}), "clear", "snaps", 0, live, slog.Default()); !errors.Is(err, pii.ErrKeyUnavailable) {
		t.Fatalf("unreadable key: %v", err)
	}
}

func TestClearTopicSpecCarriesTheErasureBound(t *testing.T) {
	var cfg ClearSinkConfig
	cfg.Kafka.Partitions = 6
	spec := ClearTopicSpec(cfg)
	if spec.Name != "profile-clear" || spec.Partitions != 6 ||
		spec.Required["cleanup.policy"] != "compact" ||
		spec.Required["max.compaction.lag.ms"] != "3600000" ||
		spec.Required["delete.retention.ms"] != "604800000" ||
		spec.Extra["segment.ms"] != "3600000" {
		t.Fatalf("spec %+v", spec)
	}
}

// A tombstone is appended again once the compaction lag has passed, so
// that its segment is rolled and can be compacted even if the partition
// gets no other write; once per partition, with the newest tombstone.
func TestClearSinkClosesOffTombstonesAfterTheLag(t *testing.T) {
	sc := sarama.NewConfig()
	sc.Producer.Return.Successes = true
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	producer := mocks.NewSyncProducer(t, sc)
	now := time.Unix(1000, 0)
	var sent []*sarama.ProducerMessage
	s := &ClearSink{
		txSink: txSink{name: "clear", checkpoints: "cp", positions: map[string]int64{}, producer: producer},
		lag:    time.Minute, now: func() time.Time { return now }, log: slog.Default(), pending: map[int32]pendingTombstone{},
	}
	s.convert = func(_ string, p int32, r *sarama.ConsumerMessage) (*sarama.ProducerMessage, error) {
		m := &sarama.ProducerMessage{Topic: "clear", Partition: p, Key: sarama.StringEncoder(r.Key), Headers: []sarama.RecordHeader{{Key: []byte("profile-version"), Value: []byte("2")}}}
		if r.Value != nil {
			m.Value = sarama.ByteEncoder(r.Value)
		}
		return m, nil
	}
	s.written = s.noteTombstones
	expect := func(n int) {
		for range n {
			producer.ExpectSendMessageWithMessageCheckerFunctionAndSucceed(func(m *sarama.ProducerMessage) error {
				sent = append(sent, m)
				return nil
			})
		}
	}
	write := func(p int32, recs ...*sarama.ConsumerMessage) {
		t.Helper()
		expect(len(recs) + 1) // and the checkpoint
		if err := s.Write(context.Background(), "snaps", p, recs, 1); err != nil {
			t.Fatal(err)
		}
	}
	live := &sarama.ConsumerMessage{Key: []byte("u-live"), Value: []byte(`{}`)}
	write(0, live, &sarama.ConsumerMessage{Key: []byte("u-a")})
	now = now.Add(30 * time.Second)
	write(0, &sarama.ConsumerMessage{Key: []byte("u-b")})
	write(1, live)

	sent = nil
	if n, err := s.closeOff(); err != nil || n != 0 || len(sent) != 0 {
		t.Fatalf("before the lag: %d closed off, %v, sent %d", n, err, len(sent))
	}
	now = now.Add(31 * time.Second) // a minute after u-a's tombstone
	expect(1)
	if n, err := s.closeOff(); err != nil || n != 1 {
		t.Fatalf("after the lag: %d closed off, %v", n, err)
	}
	m := sent[0]
	if m.Topic != "clear" || m.Partition != 0 || m.Value != nil || string(m.Key.(sarama.StringEncoder)) != "u-b" ||
		!m.Timestamp.Equal(now) || len(m.Headers) != 1 {
		t.Fatalf("closing tombstone %+v", m)
	}
	// Once only; partition 1 had no tombstone.
	now = now.Add(time.Hour)
	if n, err := s.closeOff(); err != nil || n != 0 {
		t.Fatalf("again: %d closed off, %v", n, err)
	}
	if err := producer.Close(); err != nil {
		t.Fatal(err)
	}
}
