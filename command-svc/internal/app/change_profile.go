package app

import (
	"context"

	"profiles/events"
)

// ChangeProfile replaces a profile's username and email. Only the fields
// that differ produce events; a change to nothing appends nothing.
type ChangeProfile struct {
	UID      string
	Username string
	Email    string
	IfMatch  IfMatch
	Async    bool
	// Caller must be an admin, or have UID as its subject.
	Caller Caller
}

// ChangeProfileHandler handles ChangeProfile.
type ChangeProfileHandler struct{ Deps }

// Handle appends UsernameChanged and/or EmailChanged, or returns
// ErrNotFound or a *PreconditionError, or ErrNotOwner for a caller that
// may not act on the profile.
func (h ChangeProfileHandler) Handle(ctx context.Context, cmd ChangeProfile) (Result, error) {
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
		var out []events.Payload
		if cmd.Username != cur.Username {
			out = append(out, events.UsernameChanged{Username: cmd.Username})
		}
		if cmd.Email != cur.Email {
			out = append(out, events.EmailChanged{Email: cmd.Email})
		}
		return out, nil
	})
}
