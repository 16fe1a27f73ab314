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

var errNeverSeen = errors.New("never seen")

// fakeView is an in-memory ProfileView.
type fakeView struct {
	mu      sync.Mutex
	data    map[string]events.Profile
	changed chan struct{}
}

func newFakeView(ps ...events.Profile) *fakeView {
	v := &fakeView{data: map[string]events.Profile{}, changed: make(chan struct{})}
	for _, p := range ps {
		v.data[p.UID] = p
	}
	return v
}

func (v *fakeView) Get(uid string) (events.Profile, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	p, ok := v.data[uid]
	if !ok {
		return p, errNeverSeen
	}
	return p, nil
}

func (v *fakeView) SearchEmail(string) ([]events.Profile, error) { return nil, nil }

func (v *fakeView) IndexEntry(_, uid string) (events.Profile, error) { return v.Get(uid) }

func (v *fakeView) Changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed
}

func (v *fakeView) put(p events.Profile) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.data[p.UID] = p
	close(v.changed)
	v.changed = make(chan struct{})
}

func TestGetProfile(t *testing.T) {
	live := events.Profile{UID: "a", Version: 2}
	gone := events.Profile{UID: "d", Version: 3, Deleted: true}
	tests := []struct {
		name    string
		query   app.GetProfile
		want    int64
		wantErr error
	}{
		{"live profile", app.GetProfile{UID: "a"}, 2, nil},
		{"reached min version", app.GetProfile{UID: "a", MinVersion: 2}, 2, nil},
		{"unknown uid", app.GetProfile{UID: "x"}, 0, app.ErrNotFound},
		{"deleted profile", app.GetProfile{UID: "d"}, 0, app.ErrNotFound},
		{"deleted profile does not wait", app.GetProfile{UID: "d", MinVersion: 9}, 0, app.ErrNotFound},
		{"min version never reached", app.GetProfile{UID: "a", MinVersion: 3}, 0, app.ErrNotYet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := app.GetProfileHandler{View: newFakeView(live, gone), NotFound: errNeverSeen, MaxWait: 20 * time.Millisecond}
			got, err := h.Handle(context.Background(), tt.query)
			if !errors.Is(err, tt.wantErr) || got.Version != tt.want {
				t.Fatalf("Handle = v%d, %v; want v%d, %v", got.Version, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestGetProfileWaitsForMinVersion(t *testing.T) {
	v := newFakeView()
	h := app.GetProfileHandler{View: v, NotFound: errNeverSeen, MaxWait: 5 * time.Second}
	go func() {
		time.Sleep(10 * time.Millisecond)
		v.put(events.Profile{UID: "a", Version: 1})
	}()
	got, err := h.Handle(context.Background(), app.GetProfile{UID: "a", MinVersion: 1})
	if err != nil || got.Version != 1 {
		t.Fatalf("Handle = %+v, %v", got, err)
	}
}

func TestSearchWaitsForIndexedVersion(t *testing.T) {
	v := newFakeView(events.Profile{UID: "a", Version: 1})
	h := app.SearchProfilesHandler{View: v, NotFound: errNeverSeen, MaxWait: 30 * time.Millisecond}
	if _, err := h.Handle(context.Background(), app.SearchProfiles{Email: "a@b.c", UID: "a", MinVersion: 2}); !errors.Is(err, app.ErrNotYet) {
		t.Fatalf("err = %v, want ErrNotYet", err)
	}
	h.MaxWait = 5 * time.Second
	go func() {
		time.Sleep(10 * time.Millisecond)
		v.put(events.Profile{UID: "a", Version: 2, Deleted: true})
	}()
	found, err := h.Handle(context.Background(), app.SearchProfiles{Email: "a@b.c", UID: "a", MinVersion: 2})
	if err != nil || found == nil {
		t.Fatalf("Handle = %v, %v", found, err)
	}
}
