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
	if err := cmd.Caller.mayActOn(cmd.UID); err != nil {
		return Result{}, err
	}
	return h.execute(ctx, cmd.UID, cmd.Async, func(cur events.Profile) ([]events.Payload, error) {
		if err := requireLive(cmd.UID, cur); err != nil {
			return nil, err
		}
		if err := cmd.IfMatch.check(cur); err != nil {
			return nil, err
		}
		return []events.Payload{events.ProfileDeleted{}}, nil
	})
}
