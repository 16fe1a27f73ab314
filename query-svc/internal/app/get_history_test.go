package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"profiles/events"
	"profiles/query-svc/internal/app"
)

var at = time.Date(2026, 11, 25, 12, 0, 0, 0, time.FixedZone("CET", 3600))

func event(v int64, data events.Payload) events.Event {
	return events.Event{ID: "e", Type: data.EventType(), UID: "u", Version: v, OccurredAt: at, SchemaVersion: events.SchemaVersion, Data: data}
}

// withDisplayName stands for a payload that gains a field (displayName),
// to show that entries follow the payload without a change to the code.
type withDisplayName struct {
	Username    string  `json:"username"`
	Email       string  `json:"email"`
	DisplayName string  `json:"displayName"`
	Nickname    *string `json:"nickname"`
}

func (withDisplayName) EventType() events.Type { return events.TypeProfileCreated }

func TestNewHistoryEntry(t *testing.T) {
	tests := []struct {
		name    string
		event   events.Event
		changes string // JSON
		wantErr error
	}{
		{"create sets every field", event(1, events.ProfileCreated{Username: "bob", Email: "bob1@mail.com"}),
			`{"email":"bob1@mail.com","username":"bob"}`, nil},
		{"username change", event(2, events.UsernameChanged{Username: "robert"}), `{"username":"robert"}`, nil},
		{"email change keeps the address as written", event(3, events.EmailChanged{Email: "Bob2@Mail.com"}), `{"email":"Bob2@Mail.com"}`, nil},
		{"delete changes nothing", event(4, events.ProfileDeleted{}), `{}`, nil},
		{"a new payload field shows up", event(1, withDisplayName{Username: "bob", Email: "b@m.c", DisplayName: "Bob"}),
			`{"displayName":"Bob","email":"b@m.c","username":"bob"}`, nil},
		{"a create leaves out unset fields", event(1, withDisplayName{Username: "bob", Email: "b@m.c"}),
			`{"email":"b@m.c","username":"bob"}`, nil},
		{"payload must match type", func() events.Event {
			e := event(2, events.UsernameChanged{Username: "x"})
			e.Type = events.TypeEmailChanged
			return e
		}(), "", events.ErrInvalidEvent},
		{"payload is required", events.Event{Type: events.TypeProfileDeleted, UID: "u", Version: 2}, "", events.ErrInvalidEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := app.NewHistoryEntry(tt.event)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			if got.Type != tt.event.Type || got.Version != tt.event.Version || !got.OccurredAt.Equal(at) || got.OccurredAt.Location() != time.UTC {
				t.Fatalf("entry = %+v", got)
			}
			changes, err := json.Marshal(got.Changes)
			if err != nil || string(changes) != tt.changes {
				t.Fatalf("changes = %s, %v; want %s", changes, err, tt.changes)
			}
		})
	}
}

// fakeHistory is an in-memory HistoryView.
type fakeHistory struct {
	mu      sync.Mutex
	data    map[string][]app.HistoryEntry
	changed chan struct{}
}

func newFakeHistory() *fakeHistory {
	return &fakeHistory{data: map[string][]app.HistoryEntry{}, changed: make(chan struct{})}
}

func (v *fakeHistory) History(uid string) ([]app.HistoryEntry, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]app.HistoryEntry{}, v.data[uid]...), nil
}

func (v *fakeHistory) WatchHistory(string) (<-chan struct{}, func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed, func() {}
}

func (v *fakeHistory) add(uid string, typ events.Type, version int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.data[uid] = append(v.data[uid], app.HistoryEntry{Type: typ, Version: version})
	close(v.changed)
	v.changed = make(chan struct{})
}

func TestGetHistory(t *testing.T) {
	v := newFakeHistory()
	v.add("live", events.TypeProfileCreated, 1)
	v.add("live", events.TypeUsernameChanged, 2)
	v.add("gone", events.TypeProfileCreated, 1)
	v.add("gone", events.TypeProfileDeleted, 2)
	tests := []struct {
		name    string
		query   app.GetHistory
		want    int // entries
		wantErr error
	}{
		{"live profile", app.GetHistory{UID: "live"}, 2, nil},
		{"reached min version", app.GetHistory{UID: "live", MinVersion: 2}, 2, nil},
		{"deleted profile keeps its history", app.GetHistory{UID: "gone"}, 2, nil},
		{"deleted profile does not wait", app.GetHistory{UID: "gone", MinVersion: 9}, 2, nil},
		{"unknown uid", app.GetHistory{UID: "x"}, 0, app.ErrNotFound},
		{"unknown uid with min version waits, then gives up", app.GetHistory{UID: "x", MinVersion: 1}, 0, app.ErrNotYet},
		{"min version never reached", app.GetHistory{UID: "live", MinVersion: 3}, 0, app.ErrNotYet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := app.GetHistoryHandler{View: v, MaxWait: 20 * time.Millisecond}
			got, err := h.Handle(context.Background(), tt.query)
			if !errors.Is(err, tt.wantErr) || len(got) != tt.want {
				t.Fatalf("Handle = %d entries, %v; want %d, %v", len(got), err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestGetHistoryWaitsForMinVersion(t *testing.T) {
	v := newFakeHistory()
	v.add("a", events.TypeProfileCreated, 1)
	h := app.GetHistoryHandler{View: v, MaxWait: 5 * time.Second}
	go func() {
		time.Sleep(10 * time.Millisecond)
		v.add("a", events.TypeEmailChanged, 2)
	}()
	got, err := h.Handle(context.Background(), app.GetHistory{UID: "a", MinVersion: 2})
	if err != nil || len(got) != 2 || got[1].Version != 2 {
		t.Fatalf("Handle = %+v, %v", got, err)
	}
}

func TestADeletedProfilesHistoryIsErased(t *testing.T) {
	v := newFakeHistory()
	v.add("gone", events.TypeProfileCreated, 1)
	v.data["gone"][0].Changes = map[string]json.RawMessage{"email": json.RawMessage(`"x@mail.example"`)}
	v.add("gone", events.TypeProfileDeleted, 2)
	got, err := app.GetHistoryHandler{View: v}.Handle(context.Background(), app.GetHistory{UID: "gone"})
	if err != nil || len(got) != 2 {
		t.Fatalf("Handle = %v, %v", got, err)
	}
	if !got[0].Erased || len(got[0].Changes) != 0 || got[1].Erased {
		t.Fatalf("history of a deleted profile: %+v", got)
	}
	erased, err := app.NewHistoryEntry(events.Event{Type: events.TypeEmailChanged, UID: "u", Version: 2, Data: events.EmailChanged{}, Erased: true})
	if err != nil || !erased.Erased || len(erased.Changes) != 0 {
		t.Fatalf("entry of an erased event: %+v, %v", erased, err)
	}
}
