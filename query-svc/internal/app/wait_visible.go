package app

import (
	"context"
	"errors"
	"time"
)

// WaitVisible asks to wait until a write of UID at MinVersion is visible
// to every read of it: GET by uid shows that version or later (or the
// profile is deleted, after which nothing follows), and search by each of
// Emails has seen that version of the profile (holding the email, or no
// longer holding it). It is a writer's read-your-writes wait in one
// query, where the uid and its emails are in one partition, so that one
// instance holds them all.
type WaitVisible struct {
	UID        string
	MinVersion int64
	Emails     []string
}

// WaitVisibleHandler answers WaitVisible. MaxWait bounds the whole wait,
// from its start; the zero value waits for nothing that is not visible
// already.
type WaitVisibleHandler struct {
	View     ProfileView
	NotFound error // the view's "never seen" sentinel
	MaxWait  time.Duration
}

// Handle returns nil once the write is visible, or ErrNotYet when MaxWait
// passed (or ctx ended) before it was.
func (h WaitVisibleHandler) Handle(ctx context.Context, q WaitVisible) error {
	var cancel context.CancelFunc
	ctx, cancel = context.WithTimeout(ctx, h.MaxWait)
	defer cancel()
	get := GetProfileHandler(h)
	var buf [512]byte
	if _, err := get.HandleJSON(ctx, GetProfile{UID: q.UID, MinVersion: q.MinVersion}, buf[:0]); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	search := SearchProfilesHandler(h)
	for _, email := range q.Emails {
		if err := search.waitIndexed(ctx, SearchProfiles{Email: email, UID: q.UID, MinVersion: q.MinVersion}); err != nil {
			return err
		}
	}
	return nil
}
