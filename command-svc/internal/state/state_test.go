package state

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/events"
	"profiles/platform/pii"
)

// testCodec is a codec without keys: the tests fold events in clear.
func testCodec() *pii.Codec {
	kek, _ := pii.NewKEK(make([]byte, pii.KeySize)) // 32 bytes: cannot fail
	return pii.NewCodec(kek, nil)
}

// open opens the store in fs with origin, closed at the end of t.
func open(t *testing.T, fs vfs.FS, origin string) *Store {
	t.Helper()
	s, err := Open(slog.Default(), testCodec(), "claims", Options{Dir: "state", FS: fs, Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func get(t *testing.T, s *Store, uid string) events.Profile {
	t.Helper()
	p, err := s.Get(uid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApplyIsIdempotentByVersion(t *testing.T) {
	s := open(t, vfs.NewMem(), "")
	created := events.New("e1", events.Profile{}, "u", events.ProfileCreated{Username: "bob", Email: "b@m.c"}, time.Unix(0, 0))
	for range 2 {
		if err := s.Apply(created); err != nil {
			t.Fatal(err)
		}
	}
	changed := events.New("e2", get(t, s, "u"), "u", events.UsernameChanged{Username: "rob"}, time.Unix(1, 0))
	if err := s.Apply(changed); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(created); err != nil { // a late redelivery
		t.Fatal(err)
	}
	if got := get(t, s, "u"); got.Version != 2 || got.Username != "rob" {
		t.Fatalf("state = %+v", got)
	}
}

func TestLockSerializesOneProfile(t *testing.T) {
	s := open(t, vfs.NewMem(), "")
	var (
		wg      sync.WaitGroup
		inside  int
		maxSeen int
		mu      sync.Mutex
	)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := s.Lock("u")
			mu.Lock()
			inside++
			maxSeen = max(maxSeen, inside)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			inside--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if maxSeen != 1 {
		t.Fatalf("%d commands held the lock at once", maxSeen)
	}
	if len(s.locks) != 0 {
		t.Fatalf("idle locks left behind: %d", len(s.locks))
	}
}

func TestPutClaimNeverGoesBack(t *testing.T) {
	s := open(t, vfs.NewMem(), "")
	for _, c := range []events.Claim{{UID: "u2", Seq: 2}, {UID: "u1", Seq: 1}} {
		if err := s.PutClaim("a@b.c", c); err != nil {
			t.Fatal(err)
		}
	}
	if c, ok, err := s.Claim("a@b.c"); err != nil || !ok || c.UID != "u2" {
		t.Fatalf("claim = %+v %v %v", c, ok, err)
	}
	if err := s.PutClaim("a@b.c", events.Claim{Seq: 3, Released: true}); err != nil {
		t.Fatal(err)
	}
	seq, err := s.ClaimSeq("a@b.c")
	if _, ok, _ := s.Claim("a@b.c"); ok || err != nil || seq != 3 {
		t.Fatalf("a released claim is still live (seq %d, %v)", seq, err)
	}
	if _, ok, err := s.Claim("x@y.z"); ok || err != nil {
		t.Fatalf("a claim nobody made: %v %v", ok, err)
	}
}

// record is a record of the event log (or the claims topic) at offset.
func record(t *testing.T, offset int64, key string, value []byte, headers ...*sarama.RecordHeader) *sarama.ConsumerMessage {
	t.Helper()
	return &sarama.ConsumerMessage{Offset: offset, Key: []byte(key), Value: value, Headers: headers}
}

func eventRecord(t *testing.T, offset int64, e events.Event) *sarama.ConsumerMessage {
	t.Helper()
	v, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return record(t, offset, e.UID, v)
}

// A restart resumes each partition after the last record folded, with the
// state of every record before it, and nothing of a batch that failed.
func TestRestartResumesFromTheStoredOffset(t *testing.T) {
	fs := vfs.NewMem()
	s := open(t, fs, "cluster-a events")
	if off, err := s.Start("events", 3); err != nil || off != sarama.OffsetOldest {
		t.Fatalf("start of an empty store = %d, %v; want the oldest offset", off, err)
	}
	created := events.New("e1", events.Profile{}, "u", events.ProfileCreated{Username: "bob", Email: "b@m.c"}, time.Unix(0, 0))
	next, _ := events.Apply(events.Profile{}, created)
	renamed := events.New("e2", next, "u", events.UsernameChanged{Username: "rob"}, time.Unix(1, 0))
	batch := []*sarama.ConsumerMessage{
		eventRecord(t, 10, created),
		record(t, 11, "u", []byte("{not json")), // poison: skipped, not fatal
		eventRecord(t, 12, renamed),
	}
	if err := s.Handle(context.Background(), "events", 3, batch); err != nil {
		t.Fatal(err)
	}
	seq := &sarama.RecordHeader{Key: []byte(events.HeaderSeq), Value: []byte("4")}
	claim, err := events.EncodeClaim(events.Claim{UID: "u", Seq: 4, ClaimedAt: time.Unix(2, 0).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Handle(context.Background(), "claims", 1, []*sarama.ConsumerMessage{record(t, 7, "b@m.c", claim, seq)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, fs, "cluster-a events")
	for _, tt := range []struct {
		topic string
		p     int32
		want  int64
	}{{"events", 3, 13}, {"claims", 1, 8}, {"events", 0, sarama.OffsetOldest}} {
		if off, err := s.Start(tt.topic, tt.p); err != nil || off != tt.want {
			t.Errorf("start of %s/%d after a restart = %d, %v; want %d", tt.topic, tt.p, off, err, tt.want)
		}
	}
	if got := get(t, s, "u"); got.Version != 2 || got.Username != "rob" || got.Email != "b@m.c" {
		t.Errorf("state after a restart = %+v", got)
	}
	if c, ok, err := s.Claim("b@m.c"); err != nil || !ok || c.UID != "u" || c.Seq != 4 {
		t.Errorf("claim after a restart = %+v %v %v", c, ok, err)
	}
}

// A store folded from another cluster or event log is emptied at open: its
// offsets would skip records of this one.
func TestAnotherOriginIsEmptied(t *testing.T) {
	fs := vfs.NewMem()
	s := open(t, fs, "cluster-a events")
	created := events.New("e1", events.Profile{}, "u", events.ProfileCreated{Username: "bob", Email: "b@m.c"}, time.Unix(0, 0))
	if err := s.Handle(context.Background(), "events", 0, []*sarama.ConsumerMessage{eventRecord(t, 0, created)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, fs, "cluster-b events")
	if off, err := s.Start("events", 0); err != nil || off != sarama.OffsetOldest {
		t.Errorf("start after a change of cluster = %d, %v; want the oldest offset", off, err)
	}
	if got := get(t, s, "u"); got.Version != 0 {
		t.Errorf("state of another cluster survived: %+v", got)
	}
}

// A record whose data key is not readable yet fails the whole batch,
// offset included, so that it is folded again rather than skipped.
func TestUnavailableKeyFailsTheBatch(t *testing.T) {
	kek, _ := pii.NewKEK(make([]byte, pii.KeySize))
	s, err := Open(slog.Default(), pii.NewCodec(kek, noKeys{}), "claims", Options{Dir: "state", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	created := events.New("e1", events.Profile{}, "u", events.ProfileCreated{Username: "bob", Email: "b@m.c"}, time.Unix(0, 0))
	dk, _, err := kek.NewDataKey("u")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := pii.NewCodec(kek, noKeys{}).EncodeEvent(created, dk)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Handle(context.Background(), "events", 0, []*sarama.ConsumerMessage{record(t, 5, "u", sealed)})
	if !errors.Is(err, pii.ErrKeyUnavailable) {
		t.Fatalf("Handle = %v; want ErrKeyUnavailable", err)
	}
	if off, err := s.Start("events", 0); err != nil || off != sarama.OffsetOldest {
		t.Errorf("start after a failed batch = %d, %v; want the oldest offset", off, err)
	}
}

// noKeys is a keyring that has read no key yet.
type noKeys struct{}

func (noKeys) DataKey(uid string) (*pii.DataKey, error) {
	return nil, errors.New("the keyring has not read the key yet")
}
func (noKeys) Forget(string) {}

// A delete leaves nothing personal in the store: the state of a deleted
// profile holds no username or email, and the payload an idempotent
// profile was created with is gone.
func TestDeleteKeepsNothingPersonal(t *testing.T) {
	s := open(t, vfs.NewMem(), "")
	uid := "8c1f1b42-2d5e-5a6b-9c3d-0e1f2a3b4c5d" // a version 5 (Idempotency-Key) uid
	created := events.New("e1", events.Profile{}, uid, events.ProfileCreated{Username: "bob", Email: "b@m.c"}, time.Unix(0, 0))
	if err := s.Apply(created); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.CreatedWith(uid); err != nil || !ok {
		t.Fatalf("CreatedWith of a live idempotent profile: %v %v", ok, err)
	}
	deleted := events.New("e2", get(t, s, uid), uid, events.ProfileDeleted{}, time.Unix(1, 0))
	if err := s.Apply(deleted); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, uid); !got.Deleted || got.Username != "" || got.Email != "" || got.Version != 2 {
		t.Errorf("state after the delete = %+v", got)
	}
	if c, ok, err := s.CreatedWith(uid); err != nil || ok {
		t.Errorf("CreatedWith after the delete = %+v %v %v; want nothing", c, ok, err)
	}
}
