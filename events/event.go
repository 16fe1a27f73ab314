package events

import (
	"time"
)

// Type names an event. The set is closed: Decode rejects any other value.
type Type string

// The event types. Their string values are part of the wire format.
const (
	TypeProfileCreated  Type = "ProfileCreated"
	TypeUsernameChanged Type = "UsernameChanged"
	TypeEmailChanged    Type = "EmailChanged"
	TypeProfileDeleted  Type = "ProfileDeleted"
)

// SchemaVersion is the envelope schema version this build writes. Decode
// accepts this version and every older one, which it first upcasts to this
// one (see upcast.go for the history of versions and how to add one).
const SchemaVersion = 3

// Event is one fact about one profile, as stored in the event log.
//
// Version is the profile's version after this event: 1 for ProfileCreated,
// and one more than the previous event for every later one. Data holds one
// of the payload types below and always matches Type.
type Event struct {
	ID            string
	Type          Type
	UID           string
	Version       int64
	OccurredAt    time.Time
	SchemaVersion int
	Data          Payload
	// Erased is set by pii.Codec.DecodeEvent on an event whose personal
	// fields were encrypted with a data key that is gone (crypto-shredded
	// by the profile's delete): those fields are empty.
	Erased bool
	// Sealed is set by Decode on a record whose personal fields are
	// encrypted (marked SealedPII); Encode marks such a record.
	Sealed bool
}

// Payload is implemented by exactly the four payload types of this package.
type Payload interface {
	// EventType returns the Type this payload belongs to.
	EventType() Type
}

// ProfileCreated starts a profile's history.
//
// DisplayName is new in schema version 2. A version 1 record has none, and
// the upcaster gives it the username it was created with.
type ProfileCreated struct {
	Username    string `json:"username"`
	DisplayName string `json:"displayName"`
	Email       string `json:"email"`
}

// UsernameChanged replaces the username.
type UsernameChanged struct {
	Username string `json:"username"`
}

// EmailChanged replaces the email address.
type EmailChanged struct {
	Email string `json:"email"`
}

// ProfileDeleted ends a profile's history. No event may follow it.
type ProfileDeleted struct{}

// EventType implements Payload.
func (ProfileCreated) EventType() Type { return TypeProfileCreated }

// EventType implements Payload.
func (UsernameChanged) EventType() Type { return TypeUsernameChanged }

// EventType implements Payload.
func (EmailChanged) EventType() Type { return TypeEmailChanged }

// EventType implements Payload.
func (ProfileDeleted) EventType() Type { return TypeProfileDeleted }

// New returns the event that follows state with the given payload: its
// version is state.Version+1, its type is taken from data, and id and at
// are recorded as given. New does not check that the event is allowed;
// Apply does.
func New(id string, state Profile, uid string, data Payload, at time.Time) Event {
	return Event{
		ID:            id,
		Type:          data.EventType(),
		UID:           uid,
		Version:       state.Version + 1,
		OccurredAt:    at.UTC(),
		SchemaVersion: SchemaVersion,
		Data:          data,
	}
}
