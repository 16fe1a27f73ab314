package app

import (
	"context"

	"profiles/events"
)

// DeleteProfile deletes a profile. Nothing can follow a delete: the uid is
// never live again.
type DeleteProfile struct {
	UID   string
	Async bool
}

// DeleteProfileHandler handles DeleteProfile.
type DeleteProfileHandler struct{ Deps }

// Handle appends ProfileDeleted, or returns ErrNotFound.
func (h DeleteProfileHandler) Handle(ctx context.Context, cmd DeleteProfile) (Result, error) {
	return h.execute(ctx, cmd.UID, cmd.Async, func(cur events.Profile) ([]events.Payload, error) {
		if err := requireLive(cmd.UID, cur); err != nil {
			return nil, err
		}
		return []events.Payload{events.ProfileDeleted{}}, nil
	})
}
