package app

import (
	"context"

	"profiles/events"
)

// DeleteProfile deletes a profile. Nothing can follow a delete: the uid is
// never live again.
type DeleteProfile struct {
	UID     string
	IfMatch IfMatch
	Async   bool
	// Caller must be an admin, or have UID as its subject.
	Caller Caller
}

// DeleteProfileHandler handles DeleteProfile.
type DeleteProfileHandler struct{ Deps }

// Handle appends ProfileDeleted, or returns ErrNotFound or a
// *PreconditionError, or ErrNotOwner for a caller that may not act on the
// profile.
func (h DeleteProfileHandler) Handle(ctx context.Context, cmd DeleteProfile) (Result, error) {
	return h.executeLive(ctx, cmd.Caller, cmd.UID, cmd.IfMatch, cmd.Async, func(events.Profile) []events.Payload {
		return []events.Payload{events.ProfileDeleted{}}
	})
}
