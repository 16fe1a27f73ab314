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
}

// DeleteProfileHandler handles DeleteProfile.
type DeleteProfileHandler struct{ Deps }

// Handle appends ProfileDeleted, or returns ErrNotFound or a
// *PreconditionError.
func (h DeleteProfileHandler) Handle(ctx context.Context, cmd DeleteProfile) (Result, error) {
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
