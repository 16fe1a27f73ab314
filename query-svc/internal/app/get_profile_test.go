package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
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

func (v *fakeView) GetJSON(uid string, dst []byte) (app.ProfileJSON, error) {
	p, err := v.Get(uid)
	if err != nil || p.Deleted {
		return app.ProfileJSON{Version: p.Version, Deleted: p.Deleted}, err
	}
	b, err := json.Marshal(p)
	return app.ProfileJSON{JSON: append(dst, b...), Version: p.Version}, err
}

func (v *fakeView) SearchEmail(string) ([]events.Profile, error) { return nil, nil }

func (v *fakeView) SearchEmailJSON(_ string, dst []byte) ([]byte, error) {
	return append(dst, "[]"...), nil
}

func (v *fakeView) IndexEntry(_, uid string) (events.Profile, error) { return v.Get(uid) }

// WatchProfile wakes at every put, as a view may: a query re-reads after
// any wake, and only answers once its key is what it needs.
func (v *fakeView) WatchProfile(string) (<-chan struct{}, func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed, func() {}
}

func (v *fakeView) WatchIndexEntry(string, string) (<-chan struct{}, func()) {
	return v.WatchProfile("")
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
			enc, err := h.HandleJSON(context.Background(), tt.query, nil)
			if !errors.Is(err, tt.wantErr) || enc.Version != tt.want || (err == nil) != (len(enc.JSON) > 0) {
				t.Fatalf("HandleJSON = v%d %s, %v; want v%d, %v", enc.Version, enc.JSON, err, tt.want, tt.wantErr)
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

// A profile answered as JSON is the view's at the read: a newer version
// replaces an older one, and once the view holds the delete, the profile
// is no longer answered, however it was answered before.
func TestGetProfileJSONFollowsTheView(t *testing.T) {
	v := newFakeView(events.Profile{UID: "a", Username: "old", Version: 1})
	h := app.GetProfileHandler{View: v, NotFound: errNeverSeen, MaxWait: 5 * time.Second}
	get := func(min int64) (app.ProfileJSON, error) {
		return h.HandleJSON(context.Background(), app.GetProfile{UID: "a", MinVersion: min}, make([]byte, 0, 8))
	}
	if got, err := get(0); err != nil || got.Version != 1 || !strings.Contains(string(got.JSON), `"username":"old"`) {
		t.Fatalf("v1: %s %d %v", got.JSON, got.Version, err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		v.put(events.Profile{UID: "a", Username: "new", Version: 2})
	}()
	if got, err := get(2); err != nil || got.Version != 2 || !strings.Contains(string(got.JSON), `"username":"new"`) {
		t.Fatalf("v2: %s %d %v", got.JSON, got.Version, err)
	}
	v.put(events.Profile{UID: "a", Version: 3, Deleted: true})
	for _, min := range []int64{0, 2, 3, 4} {
		if got, err := get(min); !errors.Is(err, app.ErrNotFound) || len(got.JSON) != 0 {
			t.Fatalf("after the delete, minVersion %d: %s, %v", min, got.JSON, err)
		}
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
