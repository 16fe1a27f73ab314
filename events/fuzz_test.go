package events_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"profiles/events"
)

// FuzzDecode checks that Decode never panics on any record value, that it
// fails only with ErrDecode, and that an event it accepts survives Encode
// and Decode unchanged. It is seeded from the fixtures of every schema
// version. Run it longer with
//
//	cd events && go test -run '^$' -fuzz FuzzDecode -fuzztime 5m
func FuzzDecode(f *testing.F) {
	for _, fx := range fixtures {
		for _, line := range readLines(f, filepath.Join(fixtureDir(fx.version), "events.jsonl")) {
			f.Add(line)
		}
	}
	for _, s := range []string{
		``, `{}`, `null`, `{{{`,
		`{"id":"1","type":"ProfileCreated","uid":"u","version":1,"schemaVersion":1,"data":null}`,
		`{"id":"1","type":"ProfileCreated","uid":"u","version":1,"schemaVersion":1,"data":{"Username":"b","displayName":"x"}}`,
		`{"id":"1","type":"ProfileCreated","uid":"u","version":1,"schemaVersion":1,"data":{"username":7}}`,
		`{"id":"1","type":"ProfileDeleted","uid":"u","version":1,"schemaVersion":99,"data":{}}`,
		`{"id":"1","type":"UsernameChanged","uid":"u","version":2,"occurredAt":"2026-01-01T00:00:00+05:30","schemaVersion":2,"data":{"username":"\u00e9\ud800"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		e, err := events.Decode(value)
		if err != nil {
			if !errors.Is(err, events.ErrDecode) {
				t.Fatalf("Decode error %v does not wrap ErrDecode", err)
			}
			return
		}
		if e.SchemaVersion != events.SchemaVersion || e.Data == nil || e.Data.EventType() != e.Type {
			t.Fatalf("Decode returned an inconsistent event %+v", e)
		}
		b, err := events.Encode(e)
		if err != nil {
			t.Fatalf("Encode of a decoded event: %v (event %+v)", err, e)
		}
		again, err := events.Decode(b)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(x))): %v (record %s)", err, b)
		}
		if again.ID != e.ID || again.Type != e.Type || again.UID != e.UID || again.Version != e.Version ||
			again.SchemaVersion != e.SchemaVersion || !again.OccurredAt.Equal(e.OccurredAt) || again.Data != e.Data {
			t.Fatalf("round trip changed the event:\n in %+v\nout %+v", e, again)
		}
		if b2, err := events.Encode(again); err != nil || !bytes.Equal(b2, b) {
			t.Fatalf("second encoding differs: %s, %v\nfirst %s", b2, err, b)
		}
	})
}

// FuzzDecodeSnapshot checks the snapshot codec (snapshot.go) on any record
// (key, value or tombstone, version header): DecodeSnapshot never panics,
// fails only with ErrSnapshot, and a snapshot it accepts belongs to the
// record's key, is live at a version >= 1 (or, for a tombstone, deleted at
// the header's version), and survives EncodeSnapshot and DecodeSnapshot
// unchanged, with the header the projector writes next to it. Run it
// longer with
//
//	cd events && go test -run '^$' -fuzz '^FuzzDecodeSnapshot$' -fuzztime 5m .
func FuzzDecodeSnapshot(f *testing.F) {
	at := time.Date(2026, 3, 14, 9, 26, 53, 589793000, time.UTC)
	live, err := events.EncodeSnapshot(events.Profile{UID: "u1", Username: "bob", DisplayName: "Bob Ø 🚀", Email: "b@m.c", Version: 3, CreatedAt: at, UpdatedAt: at.Add(time.Second)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("u1", live, false, "3")
	f.Add("u1", []byte(nil), true, "4")
	f.Add("u1", []byte(nil), true, "")
	f.Add("u1", []byte(nil), true, "+12")
	f.Add("u1", []byte(nil), true, "-1")
	f.Add("", live, false, "3")
	f.Add("u2", live, false, "3")
	for _, s := range []string{
		``, `null`, `{}`, `[]`, `{"uid":"u1","version":0}`, `{"uid":"u1","version":1}`,
		`{"uid":"u1","version":1,"deleted":true}`, `{"UID":"u1","Version":2,"createdAt":"2026-01-01T00:00:00+05:30"}`,
		`{"uid":"u1","version":1,"createdAt":"0000-01-01T00:00:00+01:00"}`, `{"uid":"u1","version":9223372036854775807}`,
		`{"uid":"u1","version":1,"username":"\ud800"}`,
	} {
		f.Add("u1", []byte(s), false, "1")
	}
	f.Fuzz(func(t *testing.T, uid string, value []byte, tombstone bool, header string) {
		if tombstone {
			value = nil
		} else if value == nil {
			value = []byte{} // an empty value, not a tombstone
		}
		p, err := events.DecodeSnapshot(uid, value, header)
		if err != nil {
			if !errors.Is(err, events.ErrSnapshot) {
				t.Fatalf("DecodeSnapshot error %v does not wrap ErrSnapshot", err)
			}
			return
		}
		if uid == "" || p.UID != uid {
			t.Fatalf("DecodeSnapshot(%q) returned the profile of %q", uid, p.UID)
		}
		if tombstone {
			want, _ := strconv.ParseInt(header, 10, 64)
			if !p.Deleted || p.Version != want {
				t.Fatalf("tombstone with header %q decoded to %+v", header, p)
			}
		} else if p.Deleted || p.Version < 1 {
			t.Fatalf("value %q decoded to %+v, want a live profile at a version >= 1", value, p)
		}
		b, err := events.EncodeSnapshot(p)
		if err != nil {
			t.Fatalf("EncodeSnapshot of a decoded snapshot %+v: %v", p, err)
		}
		if p.Deleted != (b == nil) {
			t.Fatalf("EncodeSnapshot(%+v) = %q: a tombstone must be nil and only a tombstone", p, b)
		}
		again, err := events.DecodeSnapshot(uid, b, strconv.FormatInt(p.Version, 10))
		if err != nil {
			t.Fatalf("DecodeSnapshot(EncodeSnapshot(%+v)): %v (value %q)", p, err, b)
		}
		if again.UID != p.UID || again.Username != p.Username || again.DisplayName != p.DisplayName || again.Email != p.Email ||
			again.Version != p.Version || again.Deleted != p.Deleted || !again.CreatedAt.Equal(p.CreatedAt) || !again.UpdatedAt.Equal(p.UpdatedAt) {
			t.Fatalf("snapshot round trip changed the profile:\n in %+v\nout %+v", p, again)
		}
		if b2, err := events.EncodeSnapshot(again); err != nil || !bytes.Equal(b2, b) {
			t.Fatalf("second encoding differs: %q, %v\nfirst %q", b2, err, b)
		}
	})
}
