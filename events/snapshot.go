package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"profiles/events/pii"
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
// the email index): the profile's JSON for a live profile, and nil (a
// tombstone) for a deleted one. When p is Sealed (folded from sealed
// records), its personal fields are encrypted with the profile's data key
// from the installed Keys (see SetKeys); a profile from before encryption,
// or one whose key is gone (erased, its fields empty), is written as it
// is.
func EncodeSnapshot(p Profile) ([]byte, error) {
	if p.Deleted {
		return nil, nil
	}
	out := sealedSnapshot{Profile: p}
	if !p.Sealed {
		return json.Marshal(out)
	}
	dk, ok, err := dataKey(p.UID)
	if err != nil {
		return nil, fmt.Errorf("data key of %s: %w", p.UID, err)
	}
	if ok {
		if err := seal(dk, personal(&out.Username, &out.DisplayName, &out.Email)); err != nil {
			return nil, fmt.Errorf("seal snapshot of %s: %w", p.UID, err)
		}
		out.PII = SealedPII
	}
	return json.Marshal(out)
}

// DecodeSnapshot parses a snapshot record of the profile uid. A nil value is
// a tombstone and yields a deleted profile at the version given by the
// record's HeaderVersion header (0 if the header is missing or invalid).
// Errors wrap ErrSnapshot, but for a sealed record whose data key cannot
// be read yet (pii.ErrKeyUnavailable), which the caller retries.
func DecodeSnapshot(uid string, value []byte, versionHeader string) (Profile, error) {
	if uid == "" {
		return Profile{}, fmt.Errorf("%w: record has no key", ErrSnapshot)
	}
	if value == nil {
		// Not a reason to forget the key: the email index tombstones an
		// entry whenever a live profile changes its email.
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
		erased, err := open(uid, personal(&p.Username, &p.DisplayName, &p.Email))
		if errors.Is(err, pii.ErrKeyUnavailable) {
			return Profile{}, fmt.Errorf("snapshot of %s: %w", uid, err) // transient: retried
		}
		if err != nil {
			return Profile{}, fmt.Errorf("%w: %v", ErrSnapshot, err)
		}
		p.Erased, p.Sealed = erased, true
	default:
		return Profile{}, fmt.Errorf("%w: unknown pii scheme %q", ErrSnapshot, sealed.PII)
	}
	if p.UID != uid || p.Version < 1 {
		return Profile{}, fmt.Errorf("%w: record for key %q holds uid %q version %d", ErrSnapshot, uid, p.UID, p.Version)
	}
	return p, nil
}
