package app_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"profiles/command-svc/internal/app"
)

func requestID(t *testing.T) string {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// A write sent again with its request id after its first owner applied it
// (routing.HeaderRequestID) is answered as it was applied, never applied
// twice, even after later writes.
func TestWriteSentAgainIsAnsweredNotAppliedTwice(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	create := app.CreateProfileHandler{Deps: f.deps}
	change := app.ChangeProfileHandler{Deps: f.deps}
	del := app.DeleteProfileHandler{Deps: f.deps}

	post := app.CreateProfile{Caller: admin, UID: "0b5e2c52-6f6b-4d55-8e3a-1b1f5f0e6c01", Username: "bob", Email: "bob@mail.com", RequestID: requestID(t)}
	first, err := create.Handle(ctx, post)
	if err != nil {
		t.Fatal(err)
	}
	put := app.ChangeProfile{Caller: admin, UID: post.UID, Username: "bobby", Email: "bob@mail.com", RequestID: requestID(t)}
	if res, err := change.Handle(ctx, put); err != nil || res.Profile.Version != 2 {
		t.Fatalf("put: %+v, %v", res, err)
	}
	if res, err := change.Handle(ctx, app.ChangeProfile{Caller: admin, UID: post.UID, Username: "robert", Email: "bob@mail.com"}); err != nil || res.Profile.Version != 3 {
		t.Fatalf("a later put: %+v, %v", res, err)
	}
	appended := len(f.log.appended)

	again, err := create.Handle(ctx, post)
	if err != nil || again.Profile.Version != 1 || again.Profile.Username != "bob" || again.Profile.CreatedAt != first.Profile.CreatedAt || again.Replayed {
		t.Fatalf("the POST sent again: %+v, %v", again, err)
	}
	res, err := change.Handle(ctx, put)
	if err != nil || res.Profile.Version != 2 || res.Profile.Username != "bobby" || res.Profile.DisplayName != "bob" || !res.Visible {
		t.Fatalf("the PUT sent again: %+v, %v", res, err)
	}
	if n := len(f.log.appended); n != appended {
		t.Fatalf("%d events appended for writes sent again", n-appended)
	}
	if w := f.vis.waited[len(f.vis.waited)-1]; w.version != 2 {
		t.Fatalf("waited for %+v", w)
	}

	// A request id not in the ledger is a new write.
	put.RequestID = requestID(t)
	if res, err := change.Handle(ctx, put); err != nil || res.Profile.Version != 4 {
		t.Fatalf("a new request: %+v, %v", res, err)
	}
	dreq := app.DeleteProfile{Caller: admin, UID: post.UID, RequestID: requestID(t)}
	if res, err := del.Handle(ctx, dreq); err != nil || !res.Profile.Deleted || res.Profile.Version != 5 {
		t.Fatalf("delete: %+v, %v", res, err)
	}
	if res, err := del.Handle(ctx, dreq); err != nil || !res.Profile.Deleted || res.Profile.Version != 5 {
		t.Fatalf("the DELETE sent again is answered as it was applied, not 404: %+v, %v", res, err)
	}
	if res, err := del.Handle(ctx, app.DeleteProfile{Caller: admin, UID: post.UID}); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("another DELETE: %+v, %v", res, err)
	}
}

// An outcome decided on the state without an append is given only while
// the instance still serves the profile (Deps.Serving, checked after the
// decision); an append is left to Kafka's fencing.
func TestAnswersWithoutAppendNeedTheLease(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	serving := true
	f.deps.Serving = func(string) bool { return serving }
	p := f.create(t)
	change := app.ChangeProfileHandler{Deps: f.deps}
	put := app.ChangeProfile{Caller: admin, UID: p.UID, Username: "bobby", Email: p.Email, RequestID: requestID(t)}
	if _, err := change.Handle(ctx, put); err != nil {
		t.Fatal(err)
	}

	serving = false
	for name, cmd := range map[string]app.ChangeProfile{
		"412":            {Caller: admin, UID: p.UID, Username: "x", Email: p.Email, IfMatch: app.IfMatch{Set: true, Versions: []int64{7}}},
		"404":            {Caller: admin, UID: "0b5e2c52-6f6b-4d55-8e3a-1b1f5f0e6c09", Username: "x", Email: p.Email},
		"no change":      {Caller: admin, UID: p.UID, Username: "bobby", Email: p.Email},
		"a write resent": put,
	} {
		if res, err := change.Handle(ctx, cmd); !errors.Is(err, app.ErrNotServing) {
			t.Errorf("%s while not serving: %+v, %v", name, res, err)
		}
	}
	n := len(f.log.appended)
	if res, err := change.Handle(ctx, app.ChangeProfile{Caller: admin, UID: p.UID, Username: "carol", Email: p.Email}); err != nil || len(f.log.appended) != n+1 {
		t.Fatalf("an append is not held back (Kafka fences it): %+v, %v", res, err)
	}
}

// A refusal tells the client the profile's version (412's ETag) or its
// delete (404): it waits until readers show that state, and is not given
// if they do not in time, unless the client asked not to wait.
func TestRefusalsWaitUntilReadersShowTheirState(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	p := f.create(t)
	change := app.ChangeProfileHandler{Deps: f.deps}
	stale := app.ChangeProfile{Caller: admin, UID: p.UID, Username: "x", Email: p.Email, IfMatch: app.IfMatch{Set: true, Versions: []int64{7}}}
	f.vis.waited = nil
	if _, err := change.Handle(ctx, stale); !errors.Is(err, app.ErrPrecondition) || len(f.vis.waited) != 1 || f.vis.waited[0].version != 1 {
		t.Fatalf("412: %v, waited %+v", err, f.vis.waited)
	}
	f.vis.err = errors.New("view behind")
	if _, err := change.Handle(ctx, stale); !errors.Is(err, app.ErrNotVisible) {
		t.Fatalf("412 on a version readers do not show: %v", err)
	}
	stale.Async = true
	if _, err := change.Handle(ctx, stale); !errors.Is(err, app.ErrPrecondition) {
		t.Fatalf("412 without waiting: %v", err)
	}
	f.vis.waited = nil
	if _, err := change.Handle(ctx, app.ChangeProfile{Caller: admin, UID: "0b5e2c52-6f6b-4d55-8e3a-1b1f5f0e6c09", Username: "x", Email: p.Email}); !errors.Is(err, app.ErrNotFound) || len(f.vis.waited) != 0 {
		t.Fatalf("404 of a profile that never existed waits for nothing: %v, %+v", err, f.vis.waited)
	}
}
