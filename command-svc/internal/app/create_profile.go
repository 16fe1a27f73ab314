package app

import (
	"context"

	"profiles/events"
)

// CreateProfile creates a profile with a new uid. Fields are validated by
// the port before the command is built.
type CreateProfile struct {
	// UID of the new profile; empty means a new one from NewID. The routing
	// layer picks it before the command runs, because it decides which
	// instance owns the new profile.
	UID      string
	Username string
	Email    string
	// Async skips waiting for readers to see the new profile.
	Async bool
}

// CreateProfileHandler handles CreateProfile.
type CreateProfileHandler struct{ Deps }

// Handle appends ProfileCreated for a fresh uid. A uid that already has a
// history is refused (events.ErrAlreadyExists).
func (h CreateProfileHandler) Handle(ctx context.Context, cmd CreateProfile) (Result, error) {
	uid := cmd.UID
	if uid == "" {
		uid = h.NewID()
	}
	return h.execute(ctx, uid, cmd.Async, func(events.Profile) ([]events.Payload, error) {
		return []events.Payload{events.ProfileCreated{Username: cmd.Username, Email: cmd.Email}}, nil
	})
}
