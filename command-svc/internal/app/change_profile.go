package app

import (
	"context"
	"time"

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
	// RequestID names the request across forwards (see write.requestID).
	RequestID string
	// Caller must be an admin, or have UID as its subject.
	Caller Caller
}

// ChangeProfileHandler handles ChangeProfile.
type ChangeProfileHandler struct{ Deps }

// Handle appends UsernameChanged and/or EmailChanged, or returns
// ErrNotFound or a *PreconditionError, or ErrNotOwner for a caller that
// may not act on the profile.
func (h ChangeProfileHandler) Handle(ctx context.Context, cmd ChangeProfile) (Result, error) {
	w := write{uid: cmd.UID, requestID: cmd.RequestID, async: cmd.Async,
		applied: func(cur events.Profile, v int64, at time.Time) events.Profile {
			cur.Username, cur.Email, cur.Version, cur.UpdatedAt, cur.Deleted = cmd.Username, cmd.Email, v, at, false
			return cur
		}}
	return h.executeLive(ctx, cmd.Caller, cmd.IfMatch, w, func(cur events.Profile) []events.Payload {
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
