package app_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"profiles/events"
	"profiles/query-svc/internal/app"
)

// indexedView is a fakeView whose email index entries are kept apart from
// the profiles, as the view applies the two topics apart.
type indexedView struct {
	*fakeView
	mu    sync.Mutex
	index map[[2]string]events.Profile // (email, uid)
}

func (v *indexedView) IndexEntry(email, uid string) (events.Profile, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.index[[2]string{email, uid}]
	if !ok {
		return e, errNeverSeen
	}
	return e, nil
}

func (v *indexedView) putIndex(email string, e events.Profile) {
	v.mu.Lock()
	v.index[[2]string{email, e.UID}] = e
	v.mu.Unlock()
	v.put(v.data[e.UID]) // wakes the watchers
}

func TestWaitVisible(t *testing.T) {
	const maxWait = 300 * time.Millisecond
	at := func(v int64) events.Profile {
		return events.Profile{UID: "u1", Username: "ann", Email: "a@b.c", Version: v}
	}
	gone := func(v int64) events.Profile { return events.Profile{UID: "u1", Version: v, Deleted: true} }
	for _, tc := range []struct {
		name string
		// profile and index are the view before the wait (nil: none);
		// later is what is applied 200 ms into it.
		profile, index *events.Profile
		laterProfile   *events.Profile
		laterIndex     *events.Profile
		emails         []string
		want           error
	}{
		{name: "both there", profile: new(at(2)), index: new(at(2)), emails: []string{"a@b.c"}},
		{name: "no email to wait for", profile: new(at(2))},
		{name: "the index comes later", profile: new(at(2)), index: new(at(1)), laterIndex: new(at(2)), emails: []string{"a@b.c"}},
		{name: "the profile comes later", profile: new(at(1)), index: new(at(2)), laterProfile: new(at(2)), emails: []string{"a@b.c"}},
		{name: "a later version counts", profile: new(at(5)), index: new(at(4)), emails: []string{"a@b.c"}},
		{name: "deleted, and the index has seen it", profile: new(gone(3)), index: new(gone(3)), emails: []string{"a@b.c"}},
		{name: "the index never gets there", profile: new(at(2)), index: new(at(1)), emails: []string{"a@b.c"}, want: app.ErrNotYet},
		{name: "the profile never gets there", profile: new(at(1)), index: new(at(2)), emails: []string{"a@b.c"}, want: app.ErrNotYet},
		{name: "the profile comes later, the index never", profile: new(at(1)), index: new(at(1)), laterProfile: new(at(2)), emails: []string{"a@b.c"}, want: app.ErrNotYet},
		{name: "never seen", emails: []string{"a@b.c"}, want: app.ErrNotYet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &indexedView{fakeView: newFakeView(), index: map[[2]string]events.Profile{}}
			if tc.profile != nil {
				v.put(*tc.profile)
			}
			if tc.index != nil {
				v.putIndex("a@b.c", *tc.index)
			}
			if tc.laterProfile != nil || tc.laterIndex != nil {
				time.AfterFunc(200*time.Millisecond, func() {
					if tc.laterProfile != nil {
						v.put(*tc.laterProfile)
					}
					if tc.laterIndex != nil {
						v.putIndex("a@b.c", *tc.laterIndex)
					}
				})
			}
			h := app.WaitVisibleHandler{View: v, NotFound: errNeverSeen, MaxWait: maxWait}
			start := time.Now()
			err := h.Handle(context.Background(), app.WaitVisible{UID: "u1", MinVersion: 2, Emails: tc.emails})
			took := time.Since(start)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("Handle: %v, want %v", err, tc.want)
			}
			// The bound is on the whole wait, not on each of its keys.
			if tc.want != nil && took > maxWait+150*time.Millisecond {
				t.Fatalf("gave up after %v, want about MaxWait (%v)", took, maxWait)
			}
		})
	}
}
