package pii_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"profiles/events"
	"profiles/platform/pii"
)

// memKeys is an in-memory pii.Keys.
type memKeys struct {
	keys      map[string]*pii.DataKey
	forgotten []string
}

func (m *memKeys) DataKey(uid string) (*pii.DataKey, error) {
	if dk := m.keys[uid]; dk != nil {
		return dk, nil
	}
	return nil, pii.ErrNoKey
}

func (m *memKeys) Forget(uid string) {
	m.forgotten = append(m.forgotten, uid)
	delete(m.keys, uid)
}

// fixedKEK is the KEK of the codec tests.
func fixedKEK(t *testing.T) *pii.KEK {
	t.Helper()
	kek, err := pii.NewKEK(bytes.Repeat([]byte{9}, pii.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

// newCodec returns a codec of fixedKEK and in-memory keys of uids.
func newCodec(t *testing.T, uids ...string) (*pii.Codec, *memKeys) {
	t.Helper()
	kek := fixedKEK(t)
	var err error
	m := &memKeys{keys: map[string]*pii.DataKey{}}
	for _, uid := range uids {
		if m.keys[uid], _, err = kek.NewDataKey(uid); err != nil {
			t.Fatal(err)
		}
	}
	return pii.NewCodec(kek, m), m
}

func TestSealedEventsHoldNoPlaintextAndDecodeWithTheirKey(t *testing.T) {
	const uid = "u-1"
	codec, keys := newCodec(t, uid)
	at := time.Unix(100, 0)
	created := events.New("e1", events.Profile{}, uid, events.ProfileCreated{Username: "Robert Tables", DisplayName: "Bobby", Email: "Bobby@Mail.Example"}, at)
	b, err := codec.EncodeEvent(created, keys.keys[uid])
	if err != nil {
		t.Fatal(err)
	}
	for _, plain := range []string{"robert", "bobby", "mail.example"} {
		if strings.Contains(strings.ToLower(string(b)), plain) {
			t.Fatalf("sealed event holds %q: %s", plain, b)
		}
	}
	if !strings.Contains(string(b), `"pii":"`+events.SealedPII+`"`) || !strings.Contains(string(b), `"schemaVersion":3`) {
		t.Fatalf("sealed event is not marked: %s", b)
	}
	e, err := codec.DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.Erased || !e.Sealed || e.Data != created.Data {
		t.Fatalf("decoded %+v, want %+v", e, created)
	}
	if _, err := codec.EncodeEvent(created, nil); err == nil {
		t.Fatal("EncodeEvent without a key succeeded")
	}

	// The delete forgets the key (its transaction tombstoned it): every
	// event of the profile now decodes as erased, without an error.
	del := events.New("e2", events.Profile{UID: uid, Version: 1}, uid, events.ProfileDeleted{}, at)
	db, err := codec.EncodeEvent(del, keys.keys[uid])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := codec.DecodeEvent(db); err != nil {
		t.Fatal(err)
	}
	if len(keys.forgotten) != 1 || keys.forgotten[0] != uid {
		t.Fatalf("forgotten %v", keys.forgotten)
	}
	e, err = codec.DecodeEvent(b)
	if err != nil {
		t.Fatalf("an event whose key is gone fails to decode: %v", err)
	}
	if !e.Erased || e.Data != (events.ProfileCreated{}) {
		t.Fatalf("decoded %+v, want an erased create", e)
	}
	// Erased events still fold.
	st, err := events.Apply(events.Profile{}, e)
	if err != nil || st.Email != "" || st.Version != 1 || !st.Sealed {
		t.Fatalf("Apply(erased) = %+v, %v", st, err)
	}
}

func TestSealedEventsDecodeAsErasedWithoutKeysAndFailWhenTampered(t *testing.T) {
	const uid = "u-2"
	codec, keys := newCodec(t, uid)
	e := events.New("e1", events.Profile{UID: uid, Version: 1}, uid, events.EmailChanged{Email: "x@mail.example"}, time.Unix(0, 0))
	b, err := codec.EncodeEvent(e, keys.keys[uid])
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(b, []byte(`"email":"`), []byte(`"email":"AA`), 1)
	if _, err := codec.DecodeEvent(tampered); !errors.Is(err, events.ErrDecode) {
		t.Fatalf("Decode(tampered) = %v, want ErrDecode", err)
	}
	got, err := pii.NewCodec(fixedKEK(t), nil).DecodeEvent(b)
	if err != nil || !got.Erased || got.Data != (events.EmailChanged{}) {
		t.Fatalf("Decode without keys = %+v, %v; want erased", got, err)
	}
}

func TestSnapshotsAreSealedWithTheProfilesKey(t *testing.T) {
	const uid = "u-3"
	codec, keys := newCodec(t, uid)
	p := events.Profile{UID: uid, Username: "snapshot-user", DisplayName: "Snap", Email: "snap@mail.example", Version: 2, CreatedAt: time.Unix(1, 0).UTC(), UpdatedAt: time.Unix(2, 0).UTC(), Sealed: true}
	b, err := codec.EncodeSnapshot(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "snap") || !strings.Contains(string(b), `"pii"`) {
		t.Fatalf("snapshot holds plaintext or no mark: %s", b)
	}
	got, err := codec.DecodeSnapshot(uid, b, "")
	if err != nil || got != p {
		t.Fatalf("DecodeSnapshot = %+v, %v; want %+v", got, err, p)
	}
	// An email index tombstone is no delete: the key stays.
	if _, err := codec.DecodeSnapshot(uid, nil, "3"); err != nil || len(keys.forgotten) != 0 {
		t.Fatalf("a tombstone: %v, forgotten %v", err, keys.forgotten)
	}
	// Once the key is gone, the old record reads as erased.
	keys.Forget(uid)
	got, err = codec.DecodeSnapshot(uid, b, "")
	if err != nil || !got.Erased || got.Email != "" || got.Username != "" || got.Version != 2 {
		t.Fatalf("DecodeSnapshot after the key is gone = %+v, %v", got, err)
	}
	// Without a key (a profile from before encryption) it is written as is.
	plain, err := codec.EncodeSnapshot(events.Profile{UID: "legacy", Email: "l@mail.example", Version: 1})
	if err != nil || !strings.Contains(string(plain), "l@mail.example") || strings.Contains(string(plain), `"pii"`) {
		t.Fatalf("legacy snapshot %s, %v", plain, err)
	}
}

// unavailableKeys cannot read any key yet (a keyring behind its topic).
type unavailableKeys struct{}

func (unavailableKeys) DataKey(uid string) (*pii.DataKey, error) {
	return nil, errors.New("keys topic unreachable")
}
func (unavailableKeys) Forget(string) {}

// A sealed record whose key cannot be read yet is neither poison nor
// erased: Decode and DecodeSnapshot return ErrKeyUnavailable, and not
// ErrDecode or ErrSnapshot, so that consumers retry it instead of
// dead-lettering it or folding it empty.
func TestAnUnreadableKeyIsTransientNotPoisonNorErased(t *testing.T) {
	const uid = "u-2"
	codec, keys := newCodec(t, uid)
	dk := keys.keys[uid]
	at := time.Unix(100, 0)
	created := events.New("e1", events.Profile{}, uid, events.ProfileCreated{Username: "carol-user", Email: "carol@mail.example"}, at)
	event, err := codec.EncodeEvent(created, dk)
	if err != nil {
		t.Fatal(err)
	}
	prof, err := events.Apply(events.Profile{}, created)
	if err != nil {
		t.Fatal(err)
	}
	prof.Sealed = true
	snapshot, err := codec.EncodeSnapshot(prof)
	if err != nil {
		t.Fatal(err)
	}

	codec = pii.NewCodec(fixedKEK(t), unavailableKeys{})
	if e, err := codec.DecodeEvent(event); !errors.Is(err, pii.ErrKeyUnavailable) || errors.Is(err, events.ErrDecode) {
		t.Fatalf("Decode = %+v, %v; want ErrKeyUnavailable and not ErrDecode", e, err)
	}
	if p, err := codec.DecodeSnapshot(uid, snapshot, "1"); !errors.Is(err, pii.ErrKeyUnavailable) || errors.Is(err, events.ErrSnapshot) {
		t.Fatalf("DecodeSnapshot = %+v, %v; want ErrKeyUnavailable and not ErrSnapshot", p, err)
	}
}

// events reads and writes a sealed record as stored: its personal fields
// stay ciphertext and it stays marked, so that a record re-encoded by a
// reader without keys is the record it read.
func TestEventsKeepsASealedRecordAsStored(t *testing.T) {
	const uid = "u-4"
	codec, keys := newCodec(t, uid)
	e := events.New("e1", events.Profile{}, uid, events.ProfileCreated{Username: "dora-user", DisplayName: "Dora", Email: "dora@mail.example"}, time.Unix(7, 0))
	b, err := codec.EncodeEvent(e, keys.keys[uid])
	if err != nil {
		t.Fatal(err)
	}
	stored, err := events.Decode(b)
	if err != nil || !stored.Sealed || stored.Erased || stored.Data == e.Data {
		t.Fatalf("events.Decode = %+v, %v; want the sealed record as stored", stored, err)
	}
	again, err := events.Encode(stored)
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("events.Encode(stored) = %s, %v; want %s", again, err, b)
	}
	if len(keys.forgotten) != 0 {
		t.Fatalf("forgotten %v", keys.forgotten)
	}

	p := events.Profile{UID: uid, Username: "dora-user", DisplayName: "Dora", Email: "dora@mail.example", Version: 1, Sealed: true}
	sb, err := codec.EncodeSnapshot(p)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := events.DecodeSnapshot(uid, sb, "")
	if err != nil || !sp.Sealed || sp.Email == p.Email {
		t.Fatalf("events.DecodeSnapshot = %+v, %v; want the sealed snapshot as stored", sp, err)
	}
	if again, err := events.EncodeSnapshot(sp); err != nil || !bytes.Equal(again, sb) {
		t.Fatalf("events.EncodeSnapshot(stored) = %s, %v; want %s", again, err, sb)
	}

	for name, rec := range map[string][]byte{
		"event":    bytes.Replace(b, []byte(events.SealedPII), []byte("rot13"), 1),
		"snapshot": bytes.Replace(sb, []byte(events.SealedPII), []byte("rot13"), 1),
	} {
		if _, err := events.Decode(rec); name == "event" && !errors.Is(err, events.ErrDecode) {
			t.Fatalf("an unknown scheme: %v, want ErrDecode", err)
		}
		if _, err := events.DecodeSnapshot(uid, rec, ""); name == "snapshot" && !errors.Is(err, events.ErrSnapshot) {
			t.Fatalf("an unknown scheme: %v, want ErrSnapshot", err)
		}
	}
}

func TestEmailKeyIsTheHMACOfTheNormalizedEmail(t *testing.T) {
	kek := fixedKEK(t)
	codec := pii.NewCodec(kek, nil)
	want := kek.EmailHash("bob@mail.example")
	for _, email := range []string{"bob@mail.example", " Bob@Mail.Example ", "BOB@MAIL.EXAMPLE"} {
		if got := codec.EmailKey(email); got != want {
			t.Errorf("EmailKey(%q) = %s, want %s", email, got, want)
		}
	}
	if codec.EmailKey("rob@mail.example") == want {
		t.Error("two addresses share a key")
	}
	var _ events.EmailKeyer = codec
}
