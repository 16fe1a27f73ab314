package adapters

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"profiles/events"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
)

// testKeys are pii.Keys that know the given data keys.
type testKeys map[string]*pii.DataKey

func (k testKeys) DataKey(uid string) (*pii.DataKey, error) {
	if dk := k[uid]; dk != nil {
		return dk, nil
	}
	return nil, pii.ErrNoKey
}
func (k testKeys) Forget(uid string) { delete(k, uid) }

// ringKeys is a DataKeys whose keyring knows some keys and tombstones
// (known), and whose waiting lookup answers from read or fails.
type ringKeys struct {
	known  map[string]*pii.DataKey
	read   map[string]*pii.DataKey
	waited []string
}

func (k *ringKeys) DataKey(uid string) (*pii.DataKey, error) {
	k.waited = append(k.waited, uid)
	if dk := k.read[uid]; dk != nil {
		return dk, nil
	}
	return nil, pii.ErrKeyUnavailable
}
func (k *ringKeys) Known(uid string) (*pii.DataKey, bool) {
	dk, ok := k.known[uid]
	return dk, ok
}
func (k *ringKeys) Put(uid string, dk *pii.DataKey) { k.known[uid] = dk }
func (k *ringKeys) Forget(uid string)               { k.known[uid] = nil }

type profilesMap map[string]events.Profile

func (m profilesMap) Get(uid string) (events.Profile, error) { return m[uid], nil }

// A missing key never makes a new one for a sealed profile: that would
// shred its earlier events. Only a profile never sealed (from before
// encryption) whose key is unknown gets a new key.
func TestKeyOfNeverReplacesTheKeyOfASealedProfile(t *testing.T) {
	kek, err := pii.NewKEK(bytes.Repeat([]byte{2}, pii.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	key := func(uid string) *pii.DataKey {
		dk, _, err := kek.NewDataKey(uid)
		if err != nil {
			t.Fatal(err)
		}
		return dk
	}
	created, readLater := key("created-here"), key("read-later")
	tests := []struct {
		name     string
		uid      string
		sealed   bool
		wantKey  *pii.DataKey
		wantErr  error
		wantWait bool
	}{
		{name: "created by this process: the key put at commit", uid: "created-here", wantKey: created},
		{name: "sealed and not read yet: waits for the key", uid: "read-later", sealed: true, wantKey: readLater, wantWait: true},
		{name: "sealed and never readable: fails, no new key", uid: "lost", sealed: true, wantErr: pii.ErrKeyUnavailable, wantWait: true},
		{name: "tombstoned: fails", uid: "deleted", sealed: true, wantErr: pii.ErrNoKey},
		{name: "from before encryption: nil, a new key comes with the append", uid: "legacy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := &ringKeys{
				known: map[string]*pii.DataKey{"created-here": created, "deleted": nil},
				read:  map[string]*pii.DataKey{"read-later": readLater},
			}
			l := &TxnEventLog{KEK: kek, Keys: keys, Profiles: profilesMap{tt.uid: {UID: tt.uid, Version: 1, Sealed: tt.sealed}}}
			dk, err := l.keyOf(tt.uid)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("keyOf = %v, want %v", err, tt.wantErr)
			}
			if dk != tt.wantKey {
				t.Fatalf("keyOf returned another key than the profile's")
			}
			if waited := len(keys.waited) > 0; waited != tt.wantWait {
				t.Fatalf("waited for the keyring: %v, want %v", waited, tt.wantWait)
			}
		})
	}
}

func TestSealEventsWritesTheKeyWithTheCreateSealsPIIAndTombstonesOnDelete(t *testing.T) {
	kek, err := pii.NewKEK(bytes.Repeat([]byte{1}, pii.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(0, 0)
	created := events.New("e1", events.Profile{}, "u", events.ProfileCreated{Username: "bob-the-user", Email: "bob@mail.example"}, at)
	keys := testKeys{}
	codec := pii.NewCodec(kek, keys)
	msgs, newKey, deleted, err := SealEvents(codec, kek, nil, "keys", "events", "/test", []events.Event{created})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || newKey == nil || deleted {
		t.Fatalf("create: %d records, new key %v, deleted %v; want the key and the event", len(msgs), newKey != nil, deleted)
	}
	if msgs[0].Topic != "keys" || msgs[1].Topic != "events" {
		t.Fatalf("create writes to %s and %s", msgs[0].Topic, msgs[1].Topic)
	}
	sealed, _ := msgs[0].Value.Encode()
	if _, err := kek.Open("u", sealed); err != nil {
		t.Fatalf("the sealed key does not open: %v", err)
	}
	value, _ := msgs[1].Value.Encode()
	if strings.Contains(string(value), "bob") {
		t.Fatalf("the event holds plaintext: %s", value)
	}
	keys["u"] = newKey
	if e, err := codec.DecodeEvent(value); err != nil || e.Data != created.Data {
		t.Fatalf("Decode = %+v, %v", e, err)
	}

	// A change uses the existing key and writes no key record.
	live := events.Profile{UID: "u", Version: 1}
	changed := events.New("e2", live, "u", events.EmailChanged{Email: "rob@mail.example"}, at)
	msgs, newKey2, _, err := SealEvents(codec, kek, newKey, "keys", "events", "/test", []events.Event{changed})
	if err != nil || len(msgs) != 1 || newKey2 != nil || msgs[0].Topic != "events" {
		t.Fatalf("change: %d records, new key %v, %v", len(msgs), newKey2 != nil, err)
	}

	// A profile from before encryption gets a key with its next event.
	msgs, legacyKey, _, err := SealEvents(codec, kek, nil, "keys", "events", "/test", []events.Event{changed})
	if err != nil || len(msgs) != 2 || legacyKey == nil {
		t.Fatalf("legacy change: %d records, new key %v, %v", len(msgs), legacyKey != nil, err)
	}

	// The delete tombstones the key in its transaction.
	del := events.New("e3", events.Profile{UID: "u", Version: 2}, "u", events.ProfileDeleted{}, at)
	msgs, _, deleted, err = SealEvents(codec, kek, newKey, "keys", "events", "/test", []events.Event{del})
	if err != nil || !deleted || len(msgs) != 2 || msgs[1].Topic != "keys" || msgs[1].Value != nil {
		t.Fatalf("delete: %d records, deleted %v, %v", len(msgs), deleted, err)
	}
	if _, err := codec.DecodeEvent(value); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := SealEvents(codec, kek, nil, "keys", "events", "/test", []events.Event{created, events.New("x", events.Profile{}, "other", events.ProfileCreated{}, at)}); err == nil {
		t.Fatal("one append of two profiles was accepted")
	}
}

// The events of one command are marked so that no reader's batch ends
// between them: every event record but the last, and no other record.
func TestMarkContinues(t *testing.T) {
	msgs := []*sarama.ProducerMessage{{Topic: "keys"}, {Topic: "events"}, {Topic: "events"}, {Topic: "claims"}, {Topic: "events"}}
	markContinues(msgs, "events")
	var got []bool
	for _, m := range msgs {
		marked := false
		for _, h := range m.Headers {
			marked = marked || string(h.Key) == kafkax.HeaderContinues
		}
		got = append(got, marked)
	}
	if fmt.Sprint(got) != "[false true true false false]" {
		t.Fatalf("marked %v", got)
	}
}
