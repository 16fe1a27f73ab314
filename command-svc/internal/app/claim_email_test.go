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
		name  string
		claim *events.Claim // the current claim, if any
		// known is how long this instance has known the claim contested
		// (0: never asked before).
		known   time.Duration
		holder  events.Profile
		wantErr error
	}{
		{"free email", nil, 0, events.Profile{}, nil},
		{"already ours", &events.Claim{UID: "me", ClaimedAt: now, Seq: 1}, 0, events.Profile{}, nil},
		{"held by a live profile", &events.Claim{UID: "other", ClaimedAt: now.Add(-time.Hour), Seq: 1}, time.Hour,
			events.Profile{UID: "other", Email: "X@mail.com", Version: 1}, app.ErrEmailTaken},
		{"being claimed within the lease", &events.Claim{UID: "other", ClaimedAt: now.Add(-time.Second), Seq: 1}, time.Second,
			events.Profile{}, app.ErrEmailTaken},
		{"first seen now, however old its ClaimedAt", &events.Claim{UID: "other", ClaimedAt: now.Add(-time.Hour), Seq: 1}, 0,
			events.Profile{}, app.ErrEmailTaken},
		{"stale: the claimant never got the email", &events.Claim{UID: "other", ClaimedAt: now.Add(-time.Minute), Seq: 1}, time.Minute,
			events.Profile{}, nil},
		{"stale: the holder moved on", &events.Claim{UID: "other", ClaimedAt: now.Add(-time.Minute), Seq: 1}, time.Minute,
			events.Profile{UID: "other", Email: "new@mail.com", Version: 2}, nil},
		{"stale: the holder was deleted", &events.Claim{UID: "other", ClaimedAt: now.Add(-time.Minute), Seq: 1}, time.Minute,
			events.Profile{UID: "other", Version: 2, Deleted: true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newStore(t)
			mono := time.Unix(5000, 0)
			ages := app.NewClaimAgesWithClock(100, func() time.Time { return mono })
			if tt.claim != nil {
				if err := store.PutClaim(email, *tt.claim); err != nil {
					t.Fatal(err)
				}
				if tt.known > 0 {
					ages.Age(email, tt.claim.Seq)
					mono = mono.Add(tt.known)
				}
			}
			log := &claimLog{}
			h := app.ClaimEmailHandler{Claims: store, Writer: log, Lookup: lookup{"other": tt.holder}, Lease: 10 * time.Second, Ages: ages, Now: func() time.Time { return now }, EmailKey: normalized{}}
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

// The email owner's wall clock steps forward 5 minutes while another
// profile's claim is being appended (1 s old): the claim must not be taken
// over, or two live profiles would get one email. Before, the lease
// compared ClaimedAt with the wall clock and this claim looked stale. A
// step back must not keep a stale claim for minutes either, and claims of
// another instance's (skewed) clock count the same.
func TestClaimLeaseIgnoresTheWallClock(t *testing.T) {
	const email = "x@mail.com"
	wall := time.Unix(1000, 0)
	mono := time.Unix(5000, 0)
	store := newStore(t)
	claimedAt := wall.Add(-time.Second)
	if err := store.PutClaim(email, events.Claim{UID: "other", ClaimedAt: claimedAt, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	h := app.ClaimEmailHandler{Claims: store, Writer: &claimLog{}, Lookup: lookup{"other": {}}, Lease: 30 * time.Second,
		Ages: app.NewClaimAgesWithClock(100, func() time.Time { return mono }), Now: func() time.Time { return wall }, EmailKey: normalized{}}
	claim := func() error { return h.Handle(context.Background(), app.ClaimEmail{Email: email, UID: "me"}) }

	wall = wall.Add(5 * time.Minute) // stepped forward; 1 s of real time passes
	mono = mono.Add(time.Second)
	if err := claim(); !errors.Is(err, app.ErrEmailTaken) {
		t.Fatalf("after a step of the wall clock by +5m, a claim 1 s old was taken over: %v", err)
	}
	wall = wall.Add(-10 * time.Minute) // stepped back, 5 minutes behind
	mono = mono.Add(20 * time.Second)
	if err := claim(); !errors.Is(err, app.ErrEmailTaken) {
		t.Fatalf("a claim known for 20 s was taken over within its 30 s lease: %v", err)
	}
	mono = mono.Add(11 * time.Second) // known for 31 s now; the wall clock still shows before ClaimedAt
	if err := claim(); err != nil {
		t.Fatalf("a claim known for longer than its lease was not taken over with the wall clock stepped back: %v", err)
	}
	c, _, _ := store.Claim(email)
	if c.UID != "me" {
		t.Fatalf("claim after the takeover: %+v", c)
	}
}

func TestClaimAgesForgetsTheOldestFirst(t *testing.T) {
	mono := time.Unix(0, 0)
	a := app.NewClaimAgesWithClock(2, func() time.Time { return mono })
	a.Age("a", 1)
	mono = mono.Add(time.Second)
	a.Age("b", 1)
	mono = mono.Add(time.Second)
	a.Age("c", 1) // forgets a
	if got := a.Age("b", 1); got != time.Second {
		t.Errorf("b: %s, want 1s", got)
	}
	if got := a.Age("a", 1); got != 0 {
		t.Errorf("a was not forgotten: %s", got)
	}
	if got := a.Age("b", 2); got != 0 {
		t.Errorf("the next claim of b (seq 2) is new: %s", got)
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
