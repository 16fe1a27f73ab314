package app

import (
	"context"

	"profiles/events"
)

// CreateProfile creates a profile with a new uid. Fields are validated by
// the port before the command is built.
type CreateProfile struct {
	Username string
	Email    string
	// Async skips waiting for readers to see the new profile.
	Async bool
}

// CreateProfileHandler handles CreateProfile.
type CreateProfileHandler struct{ Deps }

// Handle appends ProfileCreated for a fresh uid.
func (h CreateProfileHandler) Handle(ctx context.Context, cmd CreateProfile) (Result, error) {
	uid := h.NewID()
	return h.execute(ctx, uid, cmd.Async, func(events.Profile) ([]events.Payload, error) {
		return []events.Payload{events.ProfileCreated{Username: cmd.Username, Email: cmd.Email}}, nil
	})
}
