package app

import (
	"context"
	"errors"
	"time"

	"profiles/events"
)

// SearchProfiles finds the live profiles with an email address; the match is
// on the normalized form (events.NormalizeEmail). With UID and MinVersion
// set, the query first waits until the index has seen that profile at that
// version for this email (holding it, or no longer holding it): a writer
// reads its own write through search this way.
type SearchProfiles struct {
	Email      string
	UID        string
	MinVersion int64
}

// SearchProfilesHandler answers SearchProfiles. MaxWait bounds a wait.
type SearchProfilesHandler struct {
	View     ProfileView
	NotFound error // the view's "never seen" sentinel
	MaxWait  time.Duration
}

// Handle returns the matches, an empty non-nil slice when there are none,
// or ErrNotYet when the wait ran out.
func (h SearchProfilesHandler) Handle(ctx context.Context, q SearchProfiles) ([]events.Profile, error) {
	if q.UID != "" && q.MinVersion > 0 {
		if err := h.waitIndexed(ctx, q); err != nil {
			return nil, err
		}
	}
	found, err := h.View.SearchEmail(q.Email)
	if found == nil && err == nil {
		found = []events.Profile{}
	}
	return found, err
}

// HandleJSON is Handle with the answer as the API sends it: the JSON
// array of the matches ([] when there are none), appended to dst.
func (h SearchProfilesHandler) HandleJSON(ctx context.Context, q SearchProfiles, dst []byte) ([]byte, error) {
	if q.UID != "" && q.MinVersion > 0 {
		if err := h.waitIndexed(ctx, q); err != nil {
			return nil, err
		}
	}
	return h.View.SearchEmailJSON(q.Email, dst)
}

func (h SearchProfilesHandler) waitIndexed(ctx context.Context, q SearchProfiles) error {
	var w waiter
	defer w.stop()
	for {
		changed := w.before(q.MinVersion, func() (<-chan struct{}, func()) { return h.View.WatchIndexEntry(q.Email, q.UID) })
		e, err := h.View.IndexEntry(q.Email, q.UID)
		switch {
		case err != nil && !errors.Is(err, h.NotFound):
			return err
		case err == nil && e.Version >= q.MinVersion:
			return nil
		}
		if !w.wait(ctx, h.MaxWait, changed) {
			return ErrNotYet
		}
	}
}
