package app

import (
	"context"
	"time"

	"profiles/events"
)

// DeleteProfile deletes a profile. Nothing can follow a delete: the uid is
// never live again.
type DeleteProfile struct {
	UID     string
	IfMatch IfMatch
	Async   bool
	// RequestID names the request across forwards (see write.requestID).
	RequestID string
	// Caller must be an admin, or have UID as its subject.
	Caller Caller
}

// DeleteProfileHandler handles DeleteProfile.
type DeleteProfileHandler struct{ Deps }

// Handle appends ProfileDeleted, or returns ErrNotFound or a
// *PreconditionError, or ErrNotOwner for a caller that may not act on the
// profile.
func (h DeleteProfileHandler) Handle(ctx context.Context, cmd DeleteProfile) (Result, error) {
	w := write{uid: cmd.UID, requestID: cmd.RequestID, async: cmd.Async,
		applied: func(cur events.Profile, v int64, at time.Time) events.Profile {
			return events.Profile{UID: cmd.UID, Version: v, CreatedAt: cur.CreatedAt, UpdatedAt: at, Deleted: true}
		}}
	return h.executeLive(ctx, cmd.Caller, cmd.IfMatch, w, func(events.Profile) []events.Payload {
		return []events.Payload{events.ProfileDeleted{}}
	})
}
