package events_test

import (
	"errors"
	"reflect"
	"testing"

	"profiles/events"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, data := range []events.Payload{
		events.ProfileCreated{Username: "bob", DisplayName: "Bob Ø", Email: "bob1@mail.com"},
		events.UsernameChanged{Username: "robert"},
		events.EmailChanged{Email: "bob2@mail.com"},
		events.ProfileDeleted{},
	} {
		t.Run(string(data.EventType()), func(t *testing.T) {
			in := ev(1, data)
			b, err := events.Encode(in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := events.Decode(b)
			if err != nil {
				t.Fatalf("Decode(%s): %v", b, err)
			}
			if !reflect.DeepEqual(in, out) {
				t.Fatalf("round trip changed the event:\n in %+v\nout %+v", in, out)
			}
		})
	}
}

func TestDecodeRejectsPoison(t *testing.T) {
	tests := []struct {
		name  string
		value string
	}{
		{"not json", `{{{`},
		{"empty", ``},
		{"unknown type", `{"id":"1","type":"ProfileExploded","uid":"u","version":1,"schemaVersion":1,"data":{}}`},
		{"future schema", `{"id":"1","type":"ProfileDeleted","uid":"u","version":1,"schemaVersion":99,"data":{}}`},
		{"next schema", `{"id":"1","type":"ProfileDeleted","uid":"u","version":1,"schemaVersion":4,"data":{}}`},
		{"schema zero", `{"id":"1","type":"ProfileDeleted","uid":"u","version":1,"schemaVersion":0,"data":{}}`},
		{"no schema version", `{"id":"1","type":"ProfileDeleted","uid":"u","version":1,"data":{}}`},
		{"v1 create of wrong shape", `{"id":"1","type":"ProfileCreated","uid":"u","version":1,"schemaVersion":1,"data":{"username":7}}`},
		{"v1 create not an object", `{"id":"1","type":"ProfileCreated","uid":"u","version":1,"schemaVersion":1,"data":[]}`},
		{"v2 create of wrong shape", `{"id":"1","type":"ProfileCreated","uid":"u","version":1,"schemaVersion":2,"data":{"displayName":false}}`},
		{"unknown type of an old schema", `{"id":"1","type":"ProfileExploded","uid":"u","version":1,"schemaVersion":1,"data":{}}`},
		{"missing uid", `{"id":"1","type":"ProfileDeleted","version":1,"schemaVersion":1,"data":{}}`},
		{"zero version", `{"id":"1","type":"ProfileDeleted","uid":"u","version":0,"schemaVersion":1,"data":{}}`},
		{"payload of wrong shape", `{"id":"1","type":"UsernameChanged","uid":"u","version":2,"schemaVersion":1,"data":{"username":7}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := events.Decode([]byte(tt.value)); !errors.Is(err, events.ErrDecode) {
				t.Fatalf("Decode error = %v, want ErrDecode", err)
			}
		})
	}
}

func TestEncodeWritesOnlyTheCurrentSchema(t *testing.T) {
	e := ev(1, events.ProfileCreated{Username: "bob", DisplayName: "Bob", Email: "b@m.c"})
	e.SchemaVersion = 1
	if _, err := events.Encode(e); !errors.Is(err, events.ErrInvalidEvent) {
		t.Fatalf("Encode of a version 1 event = %v, want ErrInvalidEvent", err)
	}
}

func TestHeadersFollowCloudEvents(t *testing.T) {
	h := events.Headers(ev(1, events.ProfileCreated{Username: "bob", Email: "b@m.c"}), "/command-svc")
	for k, want := range map[string]string{
		"ce_id": "e", "ce_type": "ProfileCreated", "ce_source": "/command-svc",
		"ce_specversion": "1.0", "ce_subject": uid, "ce_time": "2026-11-25T12:00:01Z",
	} {
		if h[k] != want {
			t.Errorf("header %s = %q, want %q", k, h[k], want)
		}
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	live := fold(t, ev(1, events.ProfileCreated{Username: "bob", Email: "b@m.c"}))
	b, err := events.EncodeSnapshot(live)
	if err != nil || b == nil {
		t.Fatalf("EncodeSnapshot = %s, %v", b, err)
	}
	got, err := events.DecodeSnapshot(uid, b, "1")
	if err != nil || got != live {
		t.Fatalf("DecodeSnapshot = %+v, %v", got, err)
	}

	gone := fold(t, ev(1, events.ProfileCreated{Username: "bob", Email: "b@m.c"}), ev(2, events.ProfileDeleted{}))
	if b, _ := events.EncodeSnapshot(gone); b != nil {
		t.Fatalf("deleted profile must encode as a tombstone, got %s", b)
	}
	got, err = events.DecodeSnapshot(uid, nil, "2")
	if err != nil || !got.Deleted || got.Version != 2 {
		t.Fatalf("tombstone decoded as %+v, %v", got, err)
	}
	if _, err := events.DecodeSnapshot("other", b, "1"); !errors.Is(err, events.ErrSnapshot) {
		t.Fatalf("snapshot under the wrong key must be rejected, got %v", err)
	}
}

func TestClaimRoundTrip(t *testing.T) {
	c := events.Claim{UID: uid, ClaimedAt: t0, Seq: 3}
	b, err := events.EncodeClaim(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.DecodeClaim(b, "")
	if err != nil || got != c {
		t.Fatalf("DecodeClaim = %+v, %v", got, err)
	}
	if b, _ := events.EncodeClaim(events.Claim{UID: uid, Seq: 4, Released: true}); b != nil {
		t.Fatal("a released claim must be a tombstone")
	}
	if got, _ := events.DecodeClaim(nil, "4"); !got.Released || got.Seq != 4 {
		t.Fatalf("tombstone = %+v", got)
	}
	if _, err := events.DecodeClaim([]byte(`{}`), ""); err == nil {
		t.Fatal("a claim without uid was accepted")
	}
}
