package adapters

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"profiles/command-svc/internal/app"
	"profiles/events"
	"profiles/platform/kafkax"
)

// ownRouter owns partition 0 and routes every other one to "other".
type ownRouter struct{}

func (ownRouter) Route(ctx context.Context, p int32) (kafkax.Member, bool, error) {
	if p == 0 {
		return kafkax.Member{ID: "self"}, true, nil
	}
	return kafkax.Member{ID: "other", URL: "http://other"}, false, nil
}

type localClaims struct{ claims, releases []string }

func (l *localClaims) Hold(_ context.Context, c app.ClaimEmail) (app.Hold, error) {
	l.claims = append(l.claims, c.Email)
	if c.Email == "key:taken@m.c" {
		return app.Hold{}, app.ErrEmailTaken
	}
	return app.NewHold([]app.ClaimRecord{{Email: c.Email, Claim: events.Claim{UID: c.UID, Seq: 1}}}, nil), nil
}

func (l *localClaims) Release(_ context.Context, email, _ string) error {
	l.releases = append(l.releases, email)
	return nil
}

type oneState struct{}

func (oneState) Get(uid string) (events.Profile, error) {
	return events.Profile{UID: uid, Version: 7}, nil
}

// A claim or lookup whose partition this instance serves runs in process;
// any other goes to this instance's routed endpoint.
func TestPeersCallInProcessWhatThisInstanceOwns(t *testing.T) {
	var remote atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remote.Add(1)
		if r.URL.Path == "/internal/claims" {
			w.WriteHeader(http.StatusConflict)
			return
		}
		_, _ = w.Write([]byte(`{"uid":"remote","version":3}`))
	}))
	defer srv.Close()
	local := &localClaims{}
	p := &Peers{
		Router: ownRouter{},
		PartitionOf: func(key string) int32 {
			if key == "remote" || key == "key:far@m.c" {
				return 1
			}
			return 0
		},
		EmailKey: prefixKeyer("key:"),
		Claims:   local, States: oneState{}, SelfURL: srv.URL,
	}
	p.Client.HTTP = srv.Client()
	ctx := context.Background()

	// A local claim is held, to be written with the command's events.
	if h, err := p.Claim(ctx, "near@m.c", "u1"); err != nil || len(h.Records) != 1 || h.Records[0].Email != "key:near@m.c" {
		t.Fatalf("local claim: %+v, %v", h, err)
	}
	if _, err := p.Claim(ctx, "taken@m.c", "u1"); !errors.Is(err, app.ErrEmailTaken) {
		t.Fatalf("local claim of a taken email: %v", err)
	}
	if err := p.Release(ctx, "near@m.c", "u1"); err != nil {
		t.Fatalf("local release: %v", err)
	}
	if got, _ := p.Profile(ctx, "u1"); got.Version != 7 {
		t.Fatalf("local lookup = %+v", got)
	}
	if remote.Load() != 0 || len(local.claims) != 2 || len(local.releases) != 1 || local.releases[0] != "key:near@m.c" {
		t.Fatalf("in process: %d HTTP calls, claims %v, releases %v", remote.Load(), local.claims, local.releases)
	}

	if _, err := p.Claim(ctx, "far@m.c", "u1"); !errors.Is(err, app.ErrEmailTaken) {
		t.Fatalf("remote claim answered 409: %v", err)
	}
	if got, err := p.Profile(ctx, "remote"); err != nil || got.Version != 3 {
		t.Fatalf("remote lookup = %+v, %v", got, err)
	}
	if remote.Load() != 2 || len(local.claims) != 2 {
		t.Fatalf("remote: %d HTTP calls, local claims %v", remote.Load(), local.claims)
	}
}

// prefixKeyer keys an email by itself after a prefix, so that a test can
// tell a key from an email.
type prefixKeyer string

func (k prefixKeyer) EmailKey(email string) string { return string(k) + email }
