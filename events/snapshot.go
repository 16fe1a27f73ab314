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

// EncodeSnapshot returns the value of p's record in the snapshot topic: the
// profile's JSON for a live profile, and nil (a tombstone) for a deleted one.
func EncodeSnapshot(p Profile) ([]byte, error) {
	if p.Deleted {
		return nil, nil
	}
	return json.Marshal(p)
}

// DecodeSnapshot parses a snapshot record of the profile uid. A nil value is
// a tombstone and yields a deleted profile at the version given by the
// record's HeaderVersion header (0 if the header is missing or invalid).
func DecodeSnapshot(uid string, value []byte, versionHeader string) (Profile, error) {
	if uid == "" {
		return Profile{}, fmt.Errorf("%w: record has no key", ErrSnapshot)
	}
	if value == nil {
		v, _ := strconv.ParseInt(versionHeader, 10, 64)
		return Profile{UID: uid, Version: v, Deleted: true}, nil
	}
	var p Profile
	if err := json.Unmarshal(value, &p); err != nil {
		return Profile{}, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	if p.UID != uid || p.Version < 1 {
		return Profile{}, fmt.Errorf("%w: record for key %q holds uid %q version %d", ErrSnapshot, uid, p.UID, p.Version)
	}
	return p, nil
}
