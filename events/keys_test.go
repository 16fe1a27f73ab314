package events_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"profiles/events"
	"profiles/events/pii"
)

// memKeys is an in-memory events.Keys.
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

func installKeys(t *testing.T, uids ...string) (*memKeys, *pii.KEK) {
	t.Helper()
	kek, err := pii.NewKEK(bytes.Repeat([]byte{9}, pii.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	m := &memKeys{keys: map[string]*pii.DataKey{}}
	for _, uid := range uids {
		if m.keys[uid], _, err = kek.NewDataKey(uid); err != nil {
			t.Fatal(err)
		}
	}
	events.SetKeys(m)
	t.Cleanup(func() { events.SetKeys(nil) })
	return m, kek
}

func TestSealedEventsHoldNoPlaintextAndDecodeWithTheirKey(t *testing.T) {
	const uid = "u-1"
	keys, _ := installKeys(t, uid)
	at := time.Unix(100, 0)
	created := events.New("e1", events.Profile{}, uid, events.ProfileCreated{Username: "Robert Tables", DisplayName: "Bobby", Email: "Bobby@Mail.Example"}, at)
	b, err := events.EncodeSealed(created, keys.keys[uid])
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
	e, err := events.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.Erased || !e.Sealed || e.Data != created.Data {
		t.Fatalf("decoded %+v, want %+v", e, created)
	}
	if _, err := events.EncodeSealed(created, nil); err == nil {
		t.Fatal("EncodeSealed without a key succeeded")
	}

	// The delete forgets the key (its transaction tombstoned it): every
	// event of the profile now decodes as erased, without an error.
	del := events.New("e2", events.Profile{UID: uid, Version: 1}, uid, events.ProfileDeleted{}, at)
	db, err := events.EncodeSealed(del, keys.keys[uid])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.Decode(db); err != nil {
		t.Fatal(err)
	}
	if len(keys.forgotten) != 1 || keys.forgotten[0] != uid {
		t.Fatalf("forgotten %v", keys.forgotten)
	}
	e, err = events.Decode(b)
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
	keys, _ := installKeys(t, uid)
	e := events.New("e1", events.Profile{UID: uid, Version: 1}, uid, events.EmailChanged{Email: "x@mail.example"}, time.Unix(0, 0))
	b, err := events.EncodeSealed(e, keys.keys[uid])
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(b, []byte(`"email":"`), []byte(`"email":"AA`), 1)
	if _, err := events.Decode(tampered); !errors.Is(err, events.ErrDecode) {
		t.Fatalf("Decode(tampered) = %v, want ErrDecode", err)
	}
	events.SetKeys(nil)
	got, err := events.Decode(b)
	if err != nil || !got.Erased || got.Data != (events.EmailChanged{}) {
		t.Fatalf("Decode without keys = %+v, %v; want erased", got, err)
	}
}

func TestSnapshotsAreSealedWithTheProfilesKey(t *testing.T) {
	const uid = "u-3"
	keys, _ := installKeys(t, uid)
	p := events.Profile{UID: uid, Username: "snapshot-user", DisplayName: "Snap", Email: "snap@mail.example", Version: 2, CreatedAt: time.Unix(1, 0).UTC(), UpdatedAt: time.Unix(2, 0).UTC(), Sealed: true}
	b, err := events.EncodeSnapshot(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "snap") || !strings.Contains(string(b), `"pii"`) {
		t.Fatalf("snapshot holds plaintext or no mark: %s", b)
	}
	got, err := events.DecodeSnapshot(uid, b, "")
	if err != nil || got != p {
		t.Fatalf("DecodeSnapshot = %+v, %v; want %+v", got, err, p)
	}
	// An email index tombstone is no delete: the key stays.
	if _, err := events.DecodeSnapshot(uid, nil, "3"); err != nil || len(keys.forgotten) != 0 {
		t.Fatalf("a tombstone: %v, forgotten %v", err, keys.forgotten)
	}
	// Once the key is gone, the old record reads as erased.
	keys.Forget(uid)
	got, err = events.DecodeSnapshot(uid, b, "")
	if err != nil || !got.Erased || got.Email != "" || got.Username != "" || got.Version != 2 {
		t.Fatalf("DecodeSnapshot after the key is gone = %+v, %v", got, err)
	}
	// Without a key (a profile from before encryption) it is written as is.
	plain, err := events.EncodeSnapshot(events.Profile{UID: "legacy", Email: "l@mail.example", Version: 1})
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
	keys, _ := installKeys(t, uid)
	dk := keys.keys[uid]
	at := time.Unix(100, 0)
	created := events.New("e1", events.Profile{}, uid, events.ProfileCreated{Username: "carol-user", Email: "carol@mail.example"}, at)
	event, err := events.EncodeSealed(created, dk)
	if err != nil {
		t.Fatal(err)
	}
	prof, err := events.Apply(events.Profile{}, created)
	if err != nil {
		t.Fatal(err)
	}
	prof.Sealed = true
	snapshot, err := events.EncodeSnapshot(prof)
	if err != nil {
		t.Fatal(err)
	}

	events.SetKeys(unavailableKeys{})
	if e, err := events.Decode(event); !errors.Is(err, events.ErrKeyUnavailable) || errors.Is(err, events.ErrDecode) {
		t.Fatalf("Decode = %+v, %v; want ErrKeyUnavailable and not ErrDecode", e, err)
	}
	if p, err := events.DecodeSnapshot(uid, snapshot, "1"); !errors.Is(err, events.ErrKeyUnavailable) || errors.Is(err, events.ErrSnapshot) {
		t.Fatalf("DecodeSnapshot = %+v, %v; want ErrKeyUnavailable and not ErrSnapshot", p, err)
	}
}
