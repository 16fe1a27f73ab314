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
	UID string
	// Idempotent marks a UID derived from the client's Idempotency-Key: if
	// the profile exists, the command returns it instead of failing, as long
	// as it was created with the same username, display name and email.
	Idempotent bool
	Username   string
	// DisplayName is optional; empty means the username.
	DisplayName string
	Email       string
	// Async skips waiting for readers to see the new profile.
	Async bool
	// Caller must be an admin, or have UID as its subject.
	Caller Caller
}

// CreateProfileHandler handles CreateProfile.
type CreateProfileHandler struct{ Deps }

// Handle appends ProfileCreated for a fresh uid. A uid that already has a
// history is refused (events.ErrAlreadyExists), and so is a caller that may
// not act on the uid (ErrNotOwner).
func (h CreateProfileHandler) Handle(ctx context.Context, cmd CreateProfile) (Result, error) {
	uid := cmd.UID
	if uid == "" {
		uid = h.NewID()
	}
	if err := cmd.Caller.mayActOn(uid); err != nil {
		return Result{}, err
	}
	displayName := cmd.DisplayName
	if displayName == "" {
		displayName = cmd.Username
	}
	want := events.ProfileCreated{Username: cmd.Username, DisplayName: displayName, Email: cmd.Email}
	replayed := false
	res, err := h.execute(ctx, uid, cmd.Async, func(cur events.Profile) ([]events.Payload, error) {
		if cmd.Idempotent && cur.Version > 0 {
			if first, ok := h.States.CreatedWith(uid); !ok || first != want {
				return nil, ErrIdempotencyMismatch
			}
			if cur.Deleted {
				return nil, ErrIdempotencyGone
			}
			replayed = true
			return nil, nil
		}
		return []events.Payload{want}, nil
	})
	res.Replayed = replayed
	return res, err
}
