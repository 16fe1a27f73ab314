package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// HeaderVersion is the Kafka header that carries a snapshot record's profile
// version. Tombstones have no value, so the header is the only place where a
// delete's version survives.
const HeaderVersion = "profile-version"

// ErrSnapshot is returned (wrapped) by DecodeSnapshot for a record that is
// not a valid snapshot.
var ErrSnapshot = errors.New("cannot decode snapshot")

// sealedSnapshot is the JSON of a snapshot record: the profile, and
// SealedPII in "pii" when its personal fields are encrypted.
type sealedSnapshot struct {
	Profile
	PII string `json:"pii,omitempty"`
}

// EncodeSnapshot returns the value of p's record in the snapshot topic (and
// the email index), as stored: the profile's JSON for a live profile, and
// nil (a tombstone) for a deleted one. When p is Sealed, its personal
// fields must already be ciphertext (pii.Codec.EncodeSnapshot seals them):
// the record is marked SealedPII.
func EncodeSnapshot(p Profile) ([]byte, error) {
	if p.Deleted {
		return nil, nil
	}
	out := sealedSnapshot{Profile: p}
	if p.Sealed {
		out.PII = SealedPII
	}
	return json.Marshal(out)
}

// DecodeSnapshot parses a snapshot record of the profile uid, as stored. A
// nil value is a tombstone and yields a deleted profile at the version
// given by the record's HeaderVersion header (0 if the header is missing
// or invalid). A sealed record (marked SealedPII) yields a Sealed profile
// whose personal fields are still ciphertext (pii.Codec.DecodeSnapshot
// opens them). Errors wrap ErrSnapshot; an unknown "pii" scheme is one.
func DecodeSnapshot(uid string, value []byte, versionHeader string) (Profile, error) {
	if uid == "" {
		return Profile{}, fmt.Errorf("%w: record has no key", ErrSnapshot)
	}
	if value == nil {
		v, _ := strconv.ParseInt(versionHeader, 10, 64)
		return Profile{UID: uid, Version: v, Deleted: true}, nil
	}
	var sealed sealedSnapshot
	if err := json.Unmarshal(value, &sealed); err != nil {
		return Profile{}, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	p := sealed.Profile
	switch sealed.PII {
	case "":
	case SealedPII:
		p.Sealed = true
	default:
		return Profile{}, fmt.Errorf("%w: unknown pii scheme %q", ErrSnapshot, sealed.PII)
	}
	if p.UID != uid || p.Version < 1 {
		return Profile{}, fmt.Errorf("%w: record for key %q holds uid %q version %d", ErrSnapshot, uid, p.UID, p.Version)
	}
	return p, nil
}
