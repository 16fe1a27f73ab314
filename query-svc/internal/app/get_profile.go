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
	var w waiter
	defer w.stop()
	for {
		changed := w.before(q.MinVersion, func() (<-chan struct{}, func()) { return h.View.WatchProfile(q.UID) }) // taken before the read, so no change is missed
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
		if !w.wait(ctx, h.MaxWait, changed) {
			return events.Profile{}, ErrNotYet
		}
	}
}

// HandleJSON is Handle with the profile as the API answers it (see
// ProfileView.GetJSON), its JSON appended to dst. It never answers a
// deleted profile: the view's version of the profile decides, at every
// read.
func (h GetProfileHandler) HandleJSON(ctx context.Context, q GetProfile, dst []byte) (ProfileJSON, error) {
	var w waiter
	defer w.stop()
	for {
		changed := w.before(q.MinVersion, func() (<-chan struct{}, func()) { return h.View.WatchProfile(q.UID) })
		p, err := h.View.GetJSON(q.UID, dst)
		switch {
		case err != nil && !errors.Is(err, h.NotFound):
			return ProfileJSON{}, err
		case err == nil && p.Deleted:
			return ProfileJSON{}, ErrNotFound
		case err == nil && p.Version >= q.MinVersion:
			return p, nil
		case q.MinVersion == 0:
			return ProfileJSON{}, ErrNotFound
		}
		if !w.wait(ctx, h.MaxWait, changed) {
			return ProfileJSON{}, ErrNotYet
		}
	}
}

// waiter is the MinVersion wait of one query. A query without MinVersion
// never waits, so it takes neither a watch of the view nor a timer; one
// that waits bounds the whole wait by MaxWait from its first read. Its
// zero value is ready; stop ends it.
type waiter struct {
	ctx     context.Context
	cancel  context.CancelFunc
	start   time.Time
	unwatch func()
}

// before returns, when the query may wait (minVersion > 0), the channel
// of a watch that it takes with watch (one of the view's Watch methods,
// of the key the query reads) before a read, and ends the watch taken
// before the read before it; it returns nil otherwise.
func (w *waiter) before(minVersion int64, watch func() (<-chan struct{}, func())) <-chan struct{} {
	if minVersion == 0 {
		return nil
	}
	if w.start.IsZero() {
		w.start = time.Now()
	}
	w.unwatchLast()
	changed, unwatch := watch()
	w.unwatch = unwatch
	return changed
}

func (w *waiter) unwatchLast() {
	if w.unwatch != nil {
		w.unwatch()
		w.unwatch = nil
	}
}

// wait waits for changed, and reports false once MaxWait from the first
// read has passed or ctx ended.
func (w *waiter) wait(ctx context.Context, maxWait time.Duration, changed <-chan struct{}) bool {
	if w.ctx == nil {
		w.ctx, w.cancel = context.WithDeadline(ctx, w.start.Add(maxWait))
	}
	select {
	case <-changed:
		return true
	case <-w.ctx.Done():
		return false
	}
}

func (w *waiter) stop() {
	w.unwatchLast()
	if w.cancel != nil {
		w.cancel()
	}
}
