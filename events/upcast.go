package events

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Schema versions and upcasting.
//
// Every record in the event log carries the schema version it was written
// in (the envelope's schemaVersion), and the log keeps every record
// forever, so Decode must read every version ever written. It does so by
// upcasting: before it decodes the payload, it runs the record through the
// chain of upcasters from the record's version up to SchemaVersion, one
// step at a time. Only the current payload types exist in Go; an old
// version exists only as JSON and as its upcaster.
//
// The versions:
//
//	1: the first schema.
//	2: ProfileCreated gains displayName; a version 1 create gets its username.
//	3: the envelope may carry "pii": SealedPII, and the personal fields of
//	   its payload are then encrypted (see SealedPII). A version 2 record has
//	   no such mark, so it upcasts unchanged, its fields in clear. The
//	   version exists so that a reader older than encryption refuses a
//	   sealed record instead of taking its ciphertext for an email.
//
// The contract of an upcaster, upcasters[n]:
//   - It takes the envelope of a record of version n (its payload still the
//     raw JSON of version n) and returns the envelope of version n+1. It
//     leaves SchemaVersion alone (the chain sets it).
//   - It is pure and total: no I/O, no clock, no randomness, and it never
//     panics, whatever the payload holds. The same record must always
//     upcast to the same event, or two folds of one log could disagree.
//   - It converts every type that changed between n and n+1 and passes
//     every other one through unchanged, unknown types included (Decode
//     rejects those after the chain).
//   - It reads a payload the way version n's decoder did, so an old record
//     means after upcasting what it meant when it was written.
//   - It fails only for a payload that version n could not decode either.
//     Decode wraps its error in ErrDecode.
//
// To add version 3:
//  1. Before changing anything, commit fixtures of version 2 written by
//     the current encoder: testdata/schema-v2/ already holds them (events
//     and golden state); keep them as they are, never regenerate them.
//  2. Change the payload types (and Apply, if the state changes) to the new
//     shape, write upcastV2 (version 2 to 3) and register it as
//     upcasters[2], and bump SchemaVersion to 3.
//  3. Add table cases for upcastV2, and the expected state of the version 2
//     fixtures after the change as a golden written by hand (testdata/
//     schema-v2/state.v3.golden.json), not by the code under test.
//  4. Write testdata/schema-v3/ with `go test -run TestFixturesFold -update`,
//     which rewrites only the fixtures of the current version, and add
//     them to the list in fixtures_test.go.
var upcasters = map[int]upcaster{
	1: upcastV1,
	2: upcastV2,
}

// An upcaster converts the envelope of a record of one schema version to
// the next (see the contract above).
type upcaster func(env envelope) (envelope, error)

// upcast runs env through the chain of upcasters from its schema version to
// SchemaVersion. It fails for a version below 1 or above SchemaVersion, and
// for a version that has no upcaster. Errors wrap ErrDecode.
func upcast(env envelope) (envelope, error) {
	if env.SchemaVersion < 1 || env.SchemaVersion > SchemaVersion {
		return env, fmt.Errorf("%w: unsupported schema version %d", ErrDecode, env.SchemaVersion)
	}
	for env.SchemaVersion < SchemaVersion {
		from := env.SchemaVersion
		up, ok := upcasters[from]
		if !ok {
			return env, fmt.Errorf("%w: no upcaster from schema version %d", ErrDecode, from)
		}
		next, err := up(env)
		if err != nil {
			return env, fmt.Errorf("%w: upcast %s from schema version %d: %v", ErrDecode, env.Type, from, err)
		}
		next.SchemaVersion = from + 1
		env = next
	}
	return env, nil
}

// profileCreatedV1 is the payload of ProfileCreated in schema version 1.
type profileCreatedV1 struct {
	Username string `json:"username"`
	Email    string `json:"email"`
}

// upcastV1 converts version 1 to 2: a ProfileCreated gets a displayName,
// the username it was created with. Other types are unchanged.
func upcastV1(env envelope) (envelope, error) {
	if env.Type != TypeProfileCreated {
		return env, nil
	}
	var v1 profileCreatedV1
	if raw := bytes.TrimSpace(env.Data); len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
		// Decoded as version 1 decoded it: the same struct rules, so the
		// same case-insensitive keys and the same rejections.
		if err := json.Unmarshal(raw, &v1); err != nil {
			return env, err
		}
	}
	data, err := json.Marshal(ProfileCreated{Username: v1.Username, DisplayName: v1.Username, Email: v1.Email})
	if err != nil {
		return env, err
	}
	env.Data = data
	return env, nil
}

// upcastV2 converts version 2 to 3: nothing changes, a version 2 record is
// a version 3 record in clear.
func upcastV2(env envelope) (envelope, error) { return env, nil }
