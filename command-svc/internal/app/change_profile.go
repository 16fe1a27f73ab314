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
	return h.executeLive(ctx, cmd.Caller, cmd.UID, cmd.IfMatch, cmd.Async, func(cur events.Profile) []events.Payload {
		var out []events.Payload
		if cmd.Username != cur.Username {
			out = append(out, events.UsernameChanged{Username: cmd.Username})
		}
		if cmd.Email != cur.Email {
			out = append(out, events.EmailChanged{Email: cmd.Email})
		}
		return out
	})
}
