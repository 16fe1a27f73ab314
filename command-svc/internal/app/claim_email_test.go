package app_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"profiles/command-svc/internal/app"
	"profiles/events"
)

type claimLog struct{ written []events.Claim }

func (l *claimLog) WriteClaim(_ context.Context, _ string, c events.Claim) error {
	l.written = append(l.written, c)
	return nil
}

type lookup map[string]events.Profile

func (l lookup) Profile(_ context.Context, uid string) (events.Profile, error) { return l[uid], nil }

func TestClaimEmail(t *testing.T) {
	now := time.Unix(1000, 0)
	const email = "x@mail.com"
	tests := []struct {
		name    string
		claim   *events.Claim // the current claim, if any
		holder  events.Profile
		wantErr error
	}{
		{"free email", nil, events.Profile{}, nil},
		{"already ours", &events.Claim{UID: "me", ClaimedAt: now, Seq: 1}, events.Profile{}, nil},
		{"held by a live profile", &events.Claim{UID: "other", ClaimedAt: now.Add(-time.Hour), Seq: 1},
			events.Profile{UID: "other", Email: "X@mail.com", Version: 1}, app.ErrEmailTaken},
		{"being claimed within the lease", &events.Claim{UID: "other", ClaimedAt: now.Add(-time.Second), Seq: 1},
			events.Profile{}, app.ErrEmailTaken},
		{"stale: the claimant never got the email", &events.Claim{UID: "other", ClaimedAt: now.Add(-time.Minute), Seq: 1},
			events.Profile{}, nil},
		{"stale: the holder moved on", &events.Claim{UID: "other", ClaimedAt: now.Add(-time.Minute), Seq: 1},
			events.Profile{UID: "other", Email: "new@mail.com", Version: 2}, nil},
		{"stale: the holder was deleted", &events.Claim{UID: "other", ClaimedAt: now.Add(-time.Minute), Seq: 1},
			events.Profile{UID: "other", Version: 2, Deleted: true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newStore(t)
			if tt.claim != nil {
				if err := store.PutClaim(email, *tt.claim); err != nil {
					t.Fatal(err)
				}
			}
			log := &claimLog{}
			h := app.ClaimEmailHandler{Claims: store, Writer: log, Lookup: lookup{"other": tt.holder}, Lease: 10 * time.Second, Now: func() time.Time { return now }, EmailKey: normalized{}}
			err := h.Handle(context.Background(), app.ClaimEmail{Email: email, UID: "me"})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			c, ok, err := store.Claim(email)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantErr == nil && (!ok || c.UID != "me") {
				t.Fatalf("claim after success = %+v %v", c, ok)
			}
			if tt.wantErr != nil && c.UID == "me" {
				t.Fatal("a refused claim was written")
			}
		})
	}
}

func TestReleaseOnlyOwnClaim(t *testing.T) {
	store := newStore(t)
	if err := store.PutClaim("x@mail.com", events.Claim{UID: "other", Seq: 5}); err != nil {
		t.Fatal(err)
	}
	log := &claimLog{}
	h := app.ClaimEmailHandler{Claims: store, Writer: log, Now: time.Now, EmailKey: normalized{}}
	if err := h.Release(context.Background(), "x@mail.com", "me"); err != nil || len(log.written) != 0 {
		t.Fatalf("released another profile's claim: %v %v", err, log.written)
	}
	if err := h.Release(context.Background(), "x@mail.com", "other"); err != nil || len(log.written) != 1 || !log.written[0].Released || log.written[0].Seq != 6 {
		t.Fatalf("release: %v %+v", err, log.written)
	}
}
