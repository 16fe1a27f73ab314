package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// FuzzUpcast checks the contract of the upcasters (see upcast.go) on any
// (schema version, type, payload):
//
//   - upcast and every registered upcaster are total: they never panic;
//   - they are pure: the same input gives the same output (or the same
//     error), and the input's payload bytes are left untouched;
//   - an upcaster leaves SchemaVersion and the rest of the envelope alone
//     and passes every type it does not convert through byte for byte;
//   - upcast either fails with ErrDecode or returns the envelope at
//     SchemaVersion with the same id, type, uid, version and time, and a
//     record already at SchemaVersion is returned unchanged, so upcasting
//     an upcast result changes nothing (upcast is idempotent);
//   - a version 1 ProfileCreated upcasts iff version 1's decoder could
//     read it, and then decodes as the current ProfileCreated with the
//     same meaning: the same username and email, displayName = username.
//
// It is seeded from the fixtures of every schema version. Run it longer with
//
//	cd events && go test -run '^$' -fuzz '^FuzzUpcast$' -fuzztime 5m .
func FuzzUpcast(f *testing.F) {
	for v := 1; v <= SchemaVersion; v++ {
		b, err := os.ReadFile(filepath.Join("testdata", fmt.Sprintf("schema-v%d", v), "events.jsonl"))
		if err != nil {
			f.Fatal(err)
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			var env envelope
			if json.Unmarshal(line, &env) == nil {
				f.Add(env.SchemaVersion, string(env.Type), []byte(env.Data))
			}
		}
	}
	for _, s := range []struct {
		version int
		typ     Type
		data    string
	}{
		{1, TypeProfileCreated, `{"username":"bob","email":"b@m.c"}`},
		{1, TypeProfileCreated, `{"Username":"bob","EMAIL":"b@m.c","displayName":"Mallory"}`},
		{1, TypeProfileCreated, `{"username":"a","username":"b"}`},
		{1, TypeProfileCreated, `{"username":"\u00e9\ud800\udfff\u0000","email":"x"}`},
		{1, TypeProfileCreated, "{\"username\":\"\xff\xfe\"}"},
		{1, TypeProfileCreated, ` null `},
		{1, TypeProfileCreated, ``},
		{1, TypeProfileCreated, `[]`},
		{1, TypeProfileCreated, `{"username":7}`},
		{1, TypeProfileCreated, `{"username":"bob"} trailing`},
		{1, TypeUsernameChanged, `{"username":"robert"}`},
		{1, "ProfileExploded", `{{{`},
		{SchemaVersion, TypeProfileCreated, `{"username":"bob","displayName":"Bob","email":"b@m.c"}`},
		{0, TypeProfileDeleted, `{}`},
		{-1, TypeProfileDeleted, `{}`},
		{SchemaVersion + 1, TypeProfileDeleted, `{}`},
		{1 << 40, TypeProfileDeleted, `{}`},
	} {
		f.Add(s.version, string(s.typ), []byte(s.data))
	}
	at := time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)
	f.Fuzz(func(t *testing.T, version int, typ string, data []byte) {
		orig := bytes.Clone(data)
		in := envelope{ID: "e", Type: Type(typ), UID: "u", Version: 7, OccurredAt: at, SchemaVersion: version, Data: data}

		// Each upcaster on its own.
		for n, up := range upcasters {
			env := in
			env.SchemaVersion = n
			out, err := up(env)
			out2, err2 := up(env)
			if !sameResult(out, err, out2, err2) {
				t.Fatalf("upcasters[%d] is not deterministic: %+v, %v then %+v, %v", n, out, err, out2, err2)
			}
			if !bytes.Equal(data, orig) {
				t.Fatalf("upcasters[%d] modified its input payload: %q became %q", n, orig, data)
			}
			if err != nil {
				continue
			}
			if out.SchemaVersion != n || !sameHeader(out, env) {
				t.Fatalf("upcasters[%d] changed the envelope: %+v -> %+v", n, env, out)
			}
		}

		// The chain.
		out, err := upcast(in)
		out2, err2 := upcast(in)
		if !sameResult(out, err, out2, err2) {
			t.Fatalf("upcast is not deterministic: %+v, %v then %+v, %v", out, err, out2, err2)
		}
		if !bytes.Equal(data, orig) {
			t.Fatalf("upcast modified its input payload: %q became %q", orig, data)
		}
		if version < 1 || version > SchemaVersion {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("upcast of schema version %d: err = %v, want ErrDecode", version, err)
			}
			return
		}
		if version == 1 && Type(typ) == TypeProfileCreated {
			checkV1Create(t, data, out, err)
		}
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("upcast error %v does not wrap ErrDecode", err)
			}
			return
		}
		if out.SchemaVersion != SchemaVersion || !sameHeader(out, in) {
			t.Fatalf("upcast changed the envelope: %+v -> %+v", in, out)
		}
		if version == SchemaVersion && !bytes.Equal(out.Data, data) {
			t.Fatalf("upcast changed a current record's payload: %q -> %q", data, out.Data)
		}
		if version == 1 && Type(typ) != TypeProfileCreated && !bytes.Equal(out.Data, data) {
			t.Fatalf("upcast changed a %s payload it does not convert: %q -> %q", typ, data, out.Data)
		}
		again, err := upcast(out)
		if err != nil || !sameResult(again, nil, out, nil) {
			t.Fatalf("upcast is not idempotent: %+v -> %+v, %v", out, again, err)
		}
	})
}

// checkV1Create checks a version 1 ProfileCreated against version 1's
// decoder: the payload's struct of that version (username and email), read
// as decodeData reads it (empty and null are the zero value).
func checkV1Create(t *testing.T, data []byte, out envelope, err error) {
	t.Helper()
	var v1 struct {
		Username string `json:"username"`
		Email    string `json:"email"`
	}
	var v1err error
	if raw := bytes.TrimSpace(data); len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
		v1err = json.Unmarshal(raw, &v1)
	}
	if (err != nil) != (v1err != nil) {
		t.Fatalf("version 1 decoder error %v, but upcast error %v", v1err, err)
	}
	if err != nil {
		return
	}
	got, derr := decodeData[ProfileCreated](out.Data)
	want := ProfileCreated{Username: v1.Username, DisplayName: v1.Username, Email: v1.Email}
	if derr != nil || got != want {
		t.Fatalf("upcast %q to %q, which decodes to %+v, %v; want %+v", data, out.Data, got, derr, want)
	}
}

// sameHeader reports whether two envelopes agree on everything but the
// payload and the schema version.
func sameHeader(a, b envelope) bool {
	return a.ID == b.ID && a.Type == b.Type && a.UID == b.UID && a.Version == b.Version && a.OccurredAt.Equal(b.OccurredAt)
}

func sameResult(a envelope, aerr error, b envelope, berr error) bool {
	if (aerr == nil) != (berr == nil) || (aerr != nil && aerr.Error() != berr.Error()) {
		return false
	}
	return reflect.DeepEqual(a, b)
}
