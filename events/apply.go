package events

import (
	"errors"
	"fmt"
)

// Sentinel errors returned (wrapped) by Apply. Check them with errors.Is.
var (
	// ErrAlreadyExists: a ProfileCreated for a profile that already has a history.
	ErrAlreadyExists = errors.New("profile already exists")
	// ErrNotFound: an event other than ProfileCreated for a profile that was never created.
	ErrNotFound = errors.New("profile not found")
	// ErrDeleted: any event for a profile that has been deleted.
	ErrDeleted = errors.New("profile deleted")
	// ErrVersion: the event's version is not exactly one more than the state's.
	ErrVersion = errors.New("event version does not follow profile version")
	// ErrInvalidEvent: the event is malformed (wrong uid, missing payload, ...).
	ErrInvalidEvent = errors.New("invalid event")
)

// Apply folds one event into a profile's state and returns the new state.
// It is pure: it never mutates its arguments and does no I/O.
//
// state is the zero Profile for a profile without history. The event must
// belong to the same profile (state.UID is ignored while state is zero) and
// carry Version == state.Version+1. A ProfileDeleted yields a state with
// Deleted set, after which every event is rejected with ErrDeleted.
func Apply(state Profile, e Event) (Profile, error) {
	if e.Data == nil || e.Data.EventType() != e.Type {
		return state, fmt.Errorf("%w: payload does not match type %q", ErrInvalidEvent, e.Type)
	}
	if e.UID == "" || (state.Version > 0 && e.UID != state.UID) {
		return state, fmt.Errorf("%w: uid %q does not match profile %q", ErrInvalidEvent, e.UID, state.UID)
	}
	if state.Deleted {
		return state, fmt.Errorf("%w: %s v%d after delete at v%d", ErrDeleted, e.Type, e.Version, state.Version)
	}
	if _, create := e.Data.(ProfileCreated); create && state.Version > 0 {
		return state, fmt.Errorf("%w: %s", ErrAlreadyExists, e.UID)
	}
	if _, create := e.Data.(ProfileCreated); !create && state.Version == 0 {
		return state, fmt.Errorf("%w: %s for %s", ErrNotFound, e.Type, e.UID)
	}
	if e.Version != state.Version+1 {
		return state, fmt.Errorf("%w: %s v%d on v%d", ErrVersion, e.Type, e.Version, state.Version)
	}

	next := state
	next.Version = e.Version
	next.Sealed = state.Sealed || e.Sealed
	next.UpdatedAt = e.OccurredAt
	switch d := e.Data.(type) {
	case ProfileCreated:
		next = Profile{
			UID:         e.UID,
			Username:    d.Username,
			DisplayName: d.DisplayName,
			Email:       d.Email,
			Version:     e.Version,
			CreatedAt:   e.OccurredAt,
			UpdatedAt:   e.OccurredAt,
			Sealed:      e.Sealed,
		}
	case UsernameChanged:
		next.Username = d.Username
	case EmailChanged:
		next.Email = d.Email
	case ProfileDeleted:
		next = Profile{UID: state.UID, Version: e.Version, CreatedAt: state.CreatedAt, UpdatedAt: e.OccurredAt, Deleted: true}
	default:
		return state, fmt.Errorf("%w: unknown payload %T", ErrInvalidEvent, e.Data)
	}
	return next, nil
}

// IsDuplicate reports whether e has already been folded into state, that is
// whether state is at e's version or later. Consumers that may see an event
// twice (after a redelivery) skip such events, which makes their folds
// idempotent by version.
func IsDuplicate(state Profile, e Event) bool {
	return e.Version <= state.Version
}
