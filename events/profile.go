package events

import (
	"encoding/json"
	"strings"
	"time"
)

// Profile is the state of one profile after folding its events.
//
// The zero value is a profile that has never existed (Version 0). A deleted
// profile keeps its UID and the Version of its ProfileDeleted event and has
// Deleted set; it is never served, and no event may follow the delete.
//
// DisplayName is set by ProfileCreated and kept by every later change; a
// UsernameChanged does not touch it.
type Profile struct {
	UID         string    `json:"uid"`
	Username    string    `json:"username"`
	DisplayName string    `json:"displayName"`
	Email       string    `json:"email"`
	Version     int64     `json:"version"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	Deleted     bool      `json:"-"`
	// Erased is set by pii.Codec.DecodeSnapshot on a snapshot whose
	// personal fields were encrypted with a data key that is gone: they
	// are empty.
	Erased bool `json:"-"`
	// Sealed marks a profile whose personal data is sealed in Kafka (it was
	// folded from a sealed event or snapshot): pii.Codec.EncodeSnapshot
	// seals it too. A profile from before encryption is written as it was.
	Sealed bool `json:"-"`
}

// Exists reports whether p is a live profile: created and not deleted.
func (p Profile) Exists() bool { return p.Version > 0 && !p.Deleted }

// NormalizeEmail returns the form of an email address used for indexing and
// search: surrounding space trimmed and lower-cased. Two addresses with the
// same normalized form are the same address for every lookup.
func NormalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

// storedProfile is the JSON of a Profile in a service's own store: the
// flags that Profile's JSON leaves out are kept next to it.
type storedProfile struct {
	Profile
	Deleted bool `json:"deleted,omitempty"`
	Erased  bool `json:"erased,omitempty"`
	Sealed  bool `json:"sealed,omitempty"`
}

// MarshalStored encodes p, flags included, for a service's own store (not
// for a topic: records carry only what Profile's JSON holds).
func MarshalStored(p Profile) ([]byte, error) {
	return json.Marshal(storedProfile{Profile: p, Deleted: p.Deleted, Erased: p.Erased, Sealed: p.Sealed})
}

// UnmarshalStored decodes what MarshalStored encoded.
func UnmarshalStored(b []byte) (Profile, error) {
	var st storedProfile
	if err := json.Unmarshal(b, &st); err != nil {
		return Profile{}, err
	}
	st.Profile.Deleted, st.Profile.Erased, st.Profile.Sealed = st.Deleted, st.Erased, st.Sealed
	return st.Profile, nil
}
