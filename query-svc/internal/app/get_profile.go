package app

import (
	"context"
	"errors"
	"time"

	"profiles/events"
)

// GetProfile asks for one profile. With MinVersion > 0 the query waits, up
// to the handler's bound, until the view holds that version or later: a
// client that just wrote version N reads its own write with MinVersion=N.
type GetProfile struct {
	UID        string
	MinVersion int64
}

// GetProfileHandler answers GetProfile. MaxWait bounds a MinVersion wait;
// the zero value means no waiting at all.
type GetProfileHandler struct {
	View     ProfileView
	NotFound error // the view's "never seen" sentinel
	MaxWait  time.Duration
}

// Handle returns the profile, ErrNotFound, or ErrNotYet when MinVersion was
// not reached within MaxWait (or before ctx ended).
func (h GetProfileHandler) Handle(ctx context.Context, q GetProfile) (events.Profile, error) {
	ctx, cancel := context.WithTimeout(ctx, h.MaxWait)
	defer cancel()
	for {
		changed := h.View.Changed() // taken before the read, so no change is missed
		p, err := h.View.Get(q.UID)
		switch {
		case err != nil && !errors.Is(err, h.NotFound):
			return events.Profile{}, err
		case err == nil && p.Deleted:
			return events.Profile{}, ErrNotFound // nothing follows a delete
		case err == nil && p.Version >= q.MinVersion:
			return p, nil
		case q.MinVersion == 0:
			return events.Profile{}, ErrNotFound
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return events.Profile{}, ErrNotYet
		}
	}
}
