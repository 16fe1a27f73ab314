package events_test

import (
	"errors"
	"testing"
	"time"

	"profiles/events"
)

const uid = "74292b21-0fbb-4f1d-a18f-fa80f947fa5d"

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func ev(v int64, data events.Payload) events.Event {
	return events.Event{ID: "e", Type: data.EventType(), UID: uid, Version: v, OccurredAt: t0.Add(time.Duration(v) * time.Second), SchemaVersion: events.SchemaVersion, Data: data}
}

func fold(t *testing.T, history ...events.Event) events.Profile {
	t.Helper()
	var p events.Profile
	for _, e := range history {
		var err error
		if p, err = events.Apply(p, e); err != nil {
			t.Fatalf("fold %s v%d: %v", e.Type, e.Version, err)
		}
	}
	return p
}

func TestApply(t *testing.T) {
	created := ev(1, events.ProfileCreated{Username: "bob", DisplayName: "Bob B.", Email: "bob1@mail.com"})
	live := events.Profile{UID: uid, Username: "bob", DisplayName: "Bob B.", Email: "bob1@mail.com", Version: 1, CreatedAt: t0.Add(time.Second), UpdatedAt: t0.Add(time.Second)}
	deleted := events.Profile{UID: uid, Version: 2, CreatedAt: live.CreatedAt, UpdatedAt: t0.Add(2 * time.Second), Deleted: true}

	tests := []struct {
		name    string
		state   events.Profile
		event   events.Event
		want    events.Profile
		wantErr error
	}{
		{name: "create starts a profile at version 1", event: created, want: live},
		{name: "username change keeps the email and the display name", state: live, event: ev(2, events.UsernameChanged{Username: "robert"}),
			want: events.Profile{UID: uid, Username: "robert", DisplayName: "Bob B.", Email: "bob1@mail.com", Version: 2, CreatedAt: live.CreatedAt, UpdatedAt: t0.Add(2 * time.Second)}},
		{name: "email change keeps the username and the display name", state: live, event: ev(2, events.EmailChanged{Email: "bob2@mail.com"}),
			want: events.Profile{UID: uid, Username: "bob", DisplayName: "Bob B.", Email: "bob2@mail.com", Version: 2, CreatedAt: live.CreatedAt, UpdatedAt: t0.Add(2 * time.Second)}},
		{name: "delete leaves a deleted marker", state: live, event: ev(2, events.ProfileDeleted{}), want: deleted},
		{name: "second create is rejected", state: live, event: ev(2, events.ProfileCreated{Username: "x", Email: "x@y.z"}), wantErr: events.ErrAlreadyExists},
		{name: "change of an unknown profile is rejected", event: ev(1, events.UsernameChanged{Username: "x"}), wantErr: events.ErrNotFound},
		{name: "delete of an unknown profile is rejected", event: ev(1, events.ProfileDeleted{}), wantErr: events.ErrNotFound},
		{name: "change after delete is rejected", state: deleted, event: ev(3, events.UsernameChanged{Username: "x"}), wantErr: events.ErrDeleted},
		{name: "create after delete never resurrects", state: deleted, event: ev(3, events.ProfileCreated{Username: "x", Email: "x@y.z"}), wantErr: events.ErrDeleted},
		{name: "version gap is rejected", state: live, event: ev(3, events.UsernameChanged{Username: "x"}), wantErr: events.ErrVersion},
		{name: "replayed version is rejected", state: live, event: ev(1, events.UsernameChanged{Username: "x"}), wantErr: events.ErrVersion},
		{name: "create must be version 1", event: ev(2, events.ProfileCreated{Username: "x", Email: "x@y.z"}), wantErr: events.ErrVersion},
		{name: "event of another profile is rejected", state: live, event: func() events.Event {
			e := ev(2, events.UsernameChanged{Username: "x"})
			e.UID = "other"
			return e
		}(), wantErr: events.ErrInvalidEvent},
		{name: "payload must match type", state: live, event: func() events.Event {
			e := ev(2, events.UsernameChanged{Username: "x"})
			e.Type = events.TypeEmailChanged
			return e
		}(), wantErr: events.ErrInvalidEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.state
			got, err := events.Apply(tt.state, tt.event)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				if got != before {
					t.Fatalf("failed Apply changed state: %+v", got)
				}
				return
			}
			if got != tt.want {
				t.Fatalf("Apply =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestFoldSeedFlow(t *testing.T) {
	p := fold(t,
		ev(1, events.ProfileCreated{Username: "bob", Email: "bob1@mail.com"}),
		ev(2, events.EmailChanged{Email: "bob2@mail.com"}),
		ev(3, events.UsernameChanged{Username: "bobby"}),
	)
	if !p.Exists() || p.Version != 3 || p.Email != "bob2@mail.com" || p.Username != "bobby" {
		t.Fatalf("unexpected state %+v", p)
	}
	p = fold(t, ev(1, events.ProfileCreated{Username: "bob", Email: "b@m.c"}), ev(2, events.ProfileDeleted{}))
	if p.Exists() || !p.Deleted || p.Version != 2 {
		t.Fatalf("deleted profile state %+v", p)
	}
}

func TestIsDuplicate(t *testing.T) {
	state := events.Profile{UID: uid, Version: 3}
	tests := []struct {
		name    string
		version int64
		want    bool
	}{
		{"older version is a duplicate", 2, true},
		{"same version is a duplicate", 3, true},
		{"next version is new", 4, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := events.IsDuplicate(state, ev(tt.version, events.UsernameChanged{Username: "x"})); got != tt.want {
				t.Fatalf("IsDuplicate = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNormalizeEmail(t *testing.T) {
	if got := events.NormalizeEmail("  Bob1@Mail.COM "); got != "bob1@mail.com" {
		t.Fatalf("NormalizeEmail = %q", got)
	}
}
