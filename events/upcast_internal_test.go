package events

import (
	"errors"
	"testing"
)

func TestUpcastV1(t *testing.T) {
	tests := []struct {
		name     string
		typ      Type
		data     string
		wantData string
		wantErr  bool
	}{
		{name: "create gets its username as displayName", typ: TypeProfileCreated,
			data:     `{"username":"bob","email":"Bob1@Mail.com"}`,
			wantData: `{"username":"bob","displayName":"bob","email":"Bob1@Mail.com"}`},
		{name: "unicode username is copied as is", typ: TypeProfileCreated,
			data:     `{"email":"z@mail.com","username":"Zoë 🚀"}`,
			wantData: `{"username":"Zoë 🚀","displayName":"Zoë 🚀","email":"z@mail.com"}`},
		{name: "keys match as version 1 matched them, case-insensitively", typ: TypeProfileCreated,
			data:     `{"Username":"bob","EMAIL":"b@m.c"}`,
			wantData: `{"username":"bob","displayName":"bob","email":"b@m.c"}`},
		{name: "a displayName in a version 1 record meant nothing", typ: TypeProfileCreated,
			data:     `{"username":"bob","displayName":"Mallory","email":"b@m.c","extra":1}`,
			wantData: `{"username":"bob","displayName":"bob","email":"b@m.c"}`},
		{name: "missing username gives an empty displayName", typ: TypeProfileCreated,
			data:     `{"email":"b@m.c"}`,
			wantData: `{"username":"","displayName":"","email":"b@m.c"}`},
		{name: "null payload is the zero create", typ: TypeProfileCreated,
			data:     `null`,
			wantData: `{"username":"","displayName":"","email":""}`},
		{name: "wrong shape fails as in version 1", typ: TypeProfileCreated, data: `{"username":7}`, wantErr: true},
		{name: "not an object fails", typ: TypeProfileCreated, data: `"bob"`, wantErr: true},
		{name: "username change passes through", typ: TypeUsernameChanged,
			data: `{"username":"robert"}`, wantData: `{"username":"robert"}`},
		{name: "email change passes through", typ: TypeEmailChanged,
			data: `{"email":"X@y.z"}`, wantData: `{"email":"X@y.z"}`},
		{name: "delete passes through", typ: TypeProfileDeleted, data: `{}`, wantData: `{}`},
		{name: "unknown type passes through, even malformed", typ: "ProfileExploded",
			data: `{"username":7}`, wantData: `{"username":7}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := envelope{ID: "e", Type: tt.typ, UID: "u", Version: 1, SchemaVersion: 1, Data: []byte(tt.data)}
			out, err := upcastV1(in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("upcastV1 = %s, want an error", out.Data)
				}
				return
			}
			if err != nil {
				t.Fatalf("upcastV1: %v", err)
			}
			if string(out.Data) != tt.wantData {
				t.Fatalf("data = %s, want %s", out.Data, tt.wantData)
			}
			if out.ID != in.ID || out.Type != in.Type || out.UID != in.UID || out.Version != in.Version || out.SchemaVersion != in.SchemaVersion {
				t.Fatalf("upcastV1 changed the envelope: %+v", out)
			}
		})
	}
}

func TestUpcastChain(t *testing.T) {
	tests := []struct {
		name     string
		from     int
		typ      Type
		data     string
		wantData string
		wantErr  bool
	}{
		{name: "version 1 create reaches the current version", from: 1, typ: TypeProfileCreated,
			data: `{"username":"bob","email":"b@m.c"}`, wantData: `{"username":"bob","displayName":"bob","email":"b@m.c"}`},
		{name: "current version is left alone", from: SchemaVersion, typ: TypeProfileCreated,
			data: `{"username":"bob","displayName":"Bob","email":"b@m.c"}`, wantData: `{"username":"bob","displayName":"Bob","email":"b@m.c"}`},
		{name: "an upcaster's failure stops the chain", from: 1, typ: TypeProfileCreated, data: `[]`, wantErr: true},
		{name: "version 0 does not exist", from: 0, typ: TypeProfileDeleted, data: `{}`, wantErr: true},
		{name: "a future version is refused", from: SchemaVersion + 1, typ: TypeProfileDeleted, data: `{}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := upcast(envelope{ID: "e", Type: tt.typ, UID: "u", Version: 1, SchemaVersion: tt.from, Data: []byte(tt.data)})
			if tt.wantErr {
				if !errors.Is(err, ErrDecode) {
					t.Fatalf("upcast error = %v, want ErrDecode", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("upcast: %v", err)
			}
			if out.SchemaVersion != SchemaVersion || string(out.Data) != tt.wantData {
				t.Fatalf("upcast = v%d %s, want v%d %s", out.SchemaVersion, out.Data, SchemaVersion, tt.wantData)
			}
		})
	}
}

// TestEveryOldVersionHasAnUpcaster guards the contract: bumping
// SchemaVersion without registering the upcaster of the previous version
// fails here rather than on the first old record read.
func TestEveryOldVersionHasAnUpcaster(t *testing.T) {
	for v := 1; v < SchemaVersion; v++ {
		if upcasters[v] == nil {
			t.Errorf("no upcaster from schema version %d to %d", v, v+1)
		}
	}
	for v := range upcasters {
		if v < 1 || v >= SchemaVersion {
			t.Errorf("upcaster from schema version %d, outside 1..%d", v, SchemaVersion-1)
		}
	}
}

func TestUpcastV2LeavesARecordInClearUnchanged(t *testing.T) {
	in := envelope{ID: "e", Type: TypeEmailChanged, UID: "u", Version: 2, SchemaVersion: 2, Data: []byte(`{"email":"b@m.c"}`)}
	out, err := upcast(in)
	if err != nil {
		t.Fatal(err)
	}
	if out.SchemaVersion != 3 || out.PII != "" || string(out.Data) != string(in.Data) {
		t.Fatalf("upcast v2 = %+v", out)
	}
}
