package app_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/cockroachdb/pebble/v2/vfs"
	"log/slog"
	"testing"
	"time"

	"profiles/command-svc/internal/app"
	"profiles/command-svc/internal/state"
	"profiles/events"
	"profiles/platform/pii"
)

type memLog struct {
	appended []events.Event
	claims   []app.ClaimRecord
	failAt   int // fail the n-th append (1-based); 0 never
}

// Append is all or nothing, as a Kafka transaction is.
func (l *memLog) Append(_ context.Context, claims []app.ClaimRecord, es ...events.Event) error {
	if n := len(l.appended); l.failAt > n && l.failAt <= n+len(es) {
		return errors.New("broker down")
	}
	l.appended = append(l.appended, es...)
	l.claims = append(l.claims, claims...)
	return nil
}

type visibleAt struct {
	uid     string
	version int64
	emails  string
}

type memVisibility struct {
	waited []visibleAt
	err    error
}

func (v *memVisibility) WaitVisible(_ context.Context, uid string, version int64, emails []string) error {
	v.waited = append(v.waited, visibleAt{uid, version, fmt.Sprint(emails)})
	return v.err
}

// testCodec is a codec without keys: the tests fold events in clear.
func testCodec() *pii.Codec {
	kek, _ := pii.NewKEK(make([]byte, pii.KeySize)) // 32 bytes: cannot fail
	return pii.NewCodec(kek, nil)
}

// normalized keys an email by its normalized form, so that the tests can
// name the claims.
type normalized struct{}

func (normalized) EmailKey(email string) string { return events.NormalizeEmail(email) }

type fixture struct {
	states *state.Store
	log    *memLog
	vis    *memVisibility
	deps   app.Deps
}

// newStore returns an empty state store in memory, closed at the end of t.
func newStore(t *testing.T) *state.Store {
	t.Helper()
	s, err := state.Open(slog.Default(), testCodec(), "claims", state.Options{Dir: "state", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustGet(t *testing.T, s *state.Store, uid string) events.Profile {
	t.Helper()
	p, err := s.Get(uid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{states: newStore(t), log: &memLog{}, vis: &memVisibility{}}
	n := 0
	f.deps = app.Deps{States: f.states, Events: f.log, Visibility: f.vis, Claims: &memClaims{held: map[string]string{}}, ClaimLease: 30 * time.Second,
		NewID: func() string { n++; return fmt.Sprintf("id-%d", n) },
		Now:   func() time.Time { return time.Unix(100, 0) },
	}
	return f
}

// admin may act on any profile; the tests of the owner rule use others.
var admin = app.Caller{Subject: "ops", Admin: true}

func (f *fixture) create(t *testing.T) events.Profile {
	t.Helper()
	res, err := app.CreateProfileHandler{Deps: f.deps}.Handle(context.Background(), app.CreateProfile{Caller: admin, Username: "bob", Email: "bob1@mail.com"})
	if err != nil {
		t.Fatal(err)
	}
	return res.Profile
}

func TestCreateAppendsAndWaits(t *testing.T) {
	f := newFixture(t)
	p := f.create(t)
	if p.Version != 1 || p.Username != "bob" || len(f.log.appended) != 1 || f.log.appended[0].Type != events.TypeProfileCreated {
		t.Fatalf("profile %+v, log %+v", p, f.log.appended)
	}
	if len(f.vis.waited) != 1 || f.vis.waited[0] != (visibleAt{p.UID, 1, "[bob1@mail.com]"}) {
		t.Fatalf("waited for %+v", f.vis.waited)
	}
}

func TestChangeProfile(t *testing.T) {
	tests := []struct {
		name      string
		username  string
		email     string
		wantTypes []events.Type
		wantVer   int64
	}{
		{"email only", "bob", "bob2@mail.com", []events.Type{events.TypeEmailChanged}, 2},
		{"username only", "robert", "bob1@mail.com", []events.Type{events.TypeUsernameChanged}, 2},
		{"both", "robert", "bob2@mail.com", []events.Type{events.TypeUsernameChanged, events.TypeEmailChanged}, 3},
		{"nothing changes", "bob", "bob1@mail.com", nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			p := f.create(t)
			res, err := app.ChangeProfileHandler{Deps: f.deps}.Handle(context.Background(),
				app.ChangeProfile{Caller: admin, UID: p.UID, Username: tt.username, Email: tt.email})
			if err != nil {
				t.Fatal(err)
			}
			var got []events.Type
			for _, e := range f.log.appended[1:] {
				got = append(got, e.Type)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantTypes) || res.Profile.Version != tt.wantVer || !res.Visible {
				t.Fatalf("appended %v, result %+v", got, res)
			}
			if s := mustGet(t, f.states, p.UID); s != res.Profile {
				t.Fatalf("state %+v != result %+v", s, res.Profile)
			}
		})
	}
}

func TestCommandsOnMissingProfiles(t *testing.T) {
	f := newFixture(t)
	p := f.create(t)
	if _, err := (app.DeleteProfileHandler{Deps: f.deps}).Handle(context.Background(), app.DeleteProfile{Caller: admin, UID: p.UID}); err != nil {
		t.Fatal(err)
	}
	for name, run := range map[string]func(uid string) error{
		"change": func(uid string) error {
			_, err := app.ChangeProfileHandler{Deps: f.deps}.Handle(context.Background(), app.ChangeProfile{Caller: admin, UID: uid, Username: "x", Email: "x@y.z"})
			return err
		},
		"delete": func(uid string) error {
			_, err := app.DeleteProfileHandler{Deps: f.deps}.Handle(context.Background(), app.DeleteProfile{Caller: admin, UID: uid})
			return err
		},
	} {
		for _, uid := range []string{p.UID, "never-created"} {
			if err := run(uid); !errors.Is(err, app.ErrNotFound) {
				t.Errorf("%s %s: err = %v, want ErrNotFound", name, uid, err)
			}
		}
	}
	if n := len(f.log.appended); n != 2 {
		t.Fatalf("log has %d events, want 2 (create, delete)", n)
	}
}

func TestAsyncDoesNotWaitAndAFailedAppendChangesNothing(t *testing.T) {
	f := newFixture(t)
	res, err := app.CreateProfileHandler{Deps: f.deps}.Handle(context.Background(), app.CreateProfile{Caller: admin, Username: "a", Email: "a@b.cd", Async: true})
	if err != nil || res.Visible || len(f.vis.waited) != 0 {
		t.Fatalf("async create: %+v, %v, waited %v", res, err, f.vis.waited)
	}
	f.log.failAt = 3 // the second event of the change fails
	_, err = app.ChangeProfileHandler{Deps: f.deps}.Handle(context.Background(), app.ChangeProfile{Caller: admin, UID: res.Profile.UID, Username: "b", Email: "b@b.cd"})
	if !errors.Is(err, app.ErrAppend) {
		t.Fatalf("err = %v, want ErrAppend", err)
	}
	if got := mustGet(t, f.states, res.Profile.UID); got.Version != 1 || got.Username != "a" || len(f.log.appended) != 1 {
		t.Fatalf("state after a failed two-event append = %+v (log %d events), want nothing of it", got, len(f.log.appended))
	}
}

func TestVisibilityCoversEveryTouchedEmail(t *testing.T) {
	f := newFixture(t)
	p := f.create(t)
	ctx := context.Background()
	if _, err := (app.ChangeProfileHandler{Deps: f.deps}).Handle(ctx, app.ChangeProfile{Caller: admin, UID: p.UID, Username: "bob", Email: "Bob2@Mail.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := (app.ChangeProfileHandler{Deps: f.deps}).Handle(ctx, app.ChangeProfile{Caller: admin, UID: p.UID, Username: "robert", Email: "Bob2@Mail.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := (app.DeleteProfileHandler{Deps: f.deps}).Handle(ctx, app.DeleteProfile{Caller: admin, UID: p.UID}); err != nil {
		t.Fatal(err)
	}
	want := []string{"[bob1@mail.com]", "[bob2@mail.com bob1@mail.com]", "[bob2@mail.com]", "[bob2@mail.com]"}
	for i, w := range f.vis.waited {
		if w.emails != want[i] {
			t.Errorf("wait %d covered %s, want %s", i, w.emails, want[i])
		}
	}
}

func TestIfMatch(t *testing.T) {
	tests := []struct {
		name    string
		cond    app.IfMatch
		wantErr bool
	}{
		{"no condition", app.IfMatch{}, false},
		{"any", app.IfMatch{Set: true, Any: true}, false},
		{"current version", app.IfMatch{Set: true, Versions: []int64{1}}, false},
		{"one of several", app.IfMatch{Set: true, Versions: []int64{7, 1}}, false},
		{"stale version", app.IfMatch{Set: true, Versions: []int64{0, 2}}, true},
		{"no usable tag", app.IfMatch{Set: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			p := f.create(t)
			_, err := app.ChangeProfileHandler{Deps: f.deps}.Handle(context.Background(), app.ChangeProfile{Caller: admin, UID: p.UID, Username: "x", Email: "x@y.z", IfMatch: tt.cond})
			var pre *app.PreconditionError
			if tt.wantErr != errors.As(err, &pre) || (tt.wantErr && (pre.Current != 1 || !errors.Is(err, app.ErrPrecondition))) {
				t.Fatalf("err = %v", err)
			}
			_, err = app.DeleteProfileHandler{Deps: f.deps}.Handle(context.Background(), app.DeleteProfile{Caller: admin, UID: p.UID, IfMatch: app.IfMatch{Set: true, Versions: []int64{99}}})
			if !errors.Is(err, app.ErrPrecondition) {
				t.Fatalf("delete with a stale If-Match: %v", err)
			}
		})
	}
}

func TestCreateDisplayName(t *testing.T) {
	tests := []struct {
		name  string
		given string
		want  string
	}{
		{"defaults to the username", "", "bob"},
		{"kept when given", "Bob B.", "Bob B."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			res, err := app.CreateProfileHandler{Deps: f.deps}.Handle(context.Background(),
				app.CreateProfile{Caller: admin, Username: "bob", DisplayName: tt.given, Email: "bob1@mail.com"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Profile.DisplayName != tt.want {
				t.Fatalf("profile displayName = %q, want %q", res.Profile.DisplayName, tt.want)
			}
			if got := f.log.appended[0].Data.(events.ProfileCreated).DisplayName; got != tt.want {
				t.Fatalf("event displayName = %q, want %q", got, tt.want)
			}
			// A username change keeps the display name.
			res, err = app.ChangeProfileHandler{Deps: f.deps}.Handle(context.Background(),
				app.ChangeProfile{Caller: admin, UID: res.Profile.UID, Username: "robert", Email: "bob1@mail.com"})
			if err != nil || res.Profile.DisplayName != tt.want || res.Profile.Username != "robert" {
				t.Fatalf("after username change: %+v, %v", res.Profile, err)
			}
		})
	}
}

func TestIdempotentCreate(t *testing.T) {
	f := newFixture(t)
	h := app.CreateProfileHandler{Deps: f.deps}
	ctx := context.Background()
	uid := "0b3c2e3a-1c6d-5f4e-9a8b-7c6d5e4f3a2b" // a version 5 uid
	cmd := app.CreateProfile{Caller: admin, UID: uid, Idempotent: true, Username: "bob", Email: "b@m.c"}
	first, err := h.Handle(ctx, cmd)
	if err != nil || first.Replayed {
		t.Fatalf("first: %+v %v", first, err)
	}
	again, err := h.Handle(ctx, cmd)
	if err != nil || !again.Replayed || again.Profile != first.Profile {
		t.Fatalf("retry: %+v %v", again, err)
	}
	if n := len(f.log.appended); n != 1 {
		t.Fatalf("retry appended: %d events", n)
	}
	// The default display name is the username, so naming it is the same request.
	named := cmd
	named.DisplayName = "bob"
	if again, err := h.Handle(ctx, named); err != nil || !again.Replayed {
		t.Fatalf("retry naming the default displayName: %+v %v", again, err)
	}
	other := cmd
	other.Email = "other@m.c"
	if _, err := h.Handle(ctx, other); !errors.Is(err, app.ErrIdempotencyMismatch) {
		t.Fatalf("same key, other body: %v", err)
	}
	other = cmd
	other.DisplayName = "Bobby"
	if _, err := h.Handle(ctx, other); !errors.Is(err, app.ErrIdempotencyMismatch) {
		t.Fatalf("same key, other displayName: %v", err)
	}
	if _, err := (app.DeleteProfileHandler{Deps: f.deps}).Handle(ctx, app.DeleteProfile{Caller: admin, UID: uid}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Handle(ctx, cmd); !errors.Is(err, app.ErrIdempotencyGone) {
		t.Fatalf("retry after delete: %v", err)
	}
}

// memClaims is an in-memory EmailClaims.
type memClaims struct{ held map[string]string }

func (m *memClaims) Claim(_ context.Context, email, uid string) (app.Hold, error) {
	if h, ok := m.held[email]; ok && h != uid {
		return app.Hold{}, app.ErrEmailTaken
	}
	m.held[email] = uid
	return app.Hold{}, nil
}

func (m *memClaims) Release(_ context.Context, email, uid string) error {
	if m.held[email] == uid {
		delete(m.held, email)
	}
	return nil
}

func TestCommandsClaimAndReleaseEmails(t *testing.T) {
	f := newFixture(t)
	claims := f.deps.Claims.(*memClaims)
	p := f.create(t)
	ctx := context.Background()
	if claims.held["bob1@mail.com"] != p.UID {
		t.Fatalf("create did not claim: %v", claims.held)
	}
	if _, err := (app.CreateProfileHandler{Deps: f.deps}).Handle(ctx, app.CreateProfile{Caller: admin, Username: "eve", Email: "BOB1@mail.com"}); !errors.Is(err, app.ErrEmailTaken) {
		t.Fatalf("second create with the same email: %v", err)
	}
	if _, err := (app.ChangeProfileHandler{Deps: f.deps}).Handle(ctx, app.ChangeProfile{Caller: admin, UID: p.UID, Username: "bob", Email: "bob2@mail.com"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := claims.held["bob1@mail.com"]; ok || claims.held["bob2@mail.com"] != p.UID {
		t.Fatalf("change did not move the claim: %v", claims.held)
	}
	if _, err := (app.DeleteProfileHandler{Deps: f.deps}).Handle(ctx, app.DeleteProfile{Caller: admin, UID: p.UID}); err != nil {
		t.Fatal(err)
	}
	if len(claims.held) != 0 {
		t.Fatalf("delete did not release: %v", claims.held)
	}
}

// A caller that is no admin may create, change and delete only the profile
// whose uid is its subject. A refusal comes before the state is read, so
// it is the same for a profile that does not exist, and appends nothing.
func TestOwnerRule(t *testing.T) {
	const own, other, missing = "own", "other", "missing"
	tests := []struct {
		name    string
		caller  app.Caller
		command func(h app.Deps, c app.Caller) error
		wantErr error
	}{
		{"the owner creates its own profile", app.Caller{Subject: "new"}, create("new"), nil},
		{"a caller creates a profile of another uid", app.Caller{Subject: "new"}, create("else"), app.ErrNotOwner},
		{"the zero caller creates nothing", app.Caller{}, create("new"), app.ErrNotOwner},
		{"an admin creates any uid", admin, create("else"), nil},
		{"the owner changes its profile", app.Caller{Subject: own}, change(own), nil},
		{"another caller changes it", app.Caller{Subject: other}, change(own), app.ErrNotOwner},
		{"another caller changes a missing profile", app.Caller{Subject: other}, change(missing), app.ErrNotOwner},
		{"the zero caller changes nothing", app.Caller{}, change(own), app.ErrNotOwner},
		{"an admin changes it", admin, change(own), nil},
		{"the owner deletes its profile", app.Caller{Subject: own}, remove(own), nil},
		{"another caller deletes it", app.Caller{Subject: other}, remove(own), app.ErrNotOwner},
		{"an admin deletes it", admin, remove(own), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			if _, err := (app.CreateProfileHandler{Deps: f.deps}).Handle(ctx, app.CreateProfile{Caller: admin, UID: own, Username: "bob", Email: "bob1@mail.com"}); err != nil {
				t.Fatal(err)
			}
			before := len(f.log.appended)
			err := tt.command(f.deps, tt.caller)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if appended := len(f.log.appended) - before; (err == nil) != (appended > 0) {
				t.Fatalf("appended %d events with err %v", appended, err)
			}
		})
	}
}

func create(uid string) func(app.Deps, app.Caller) error {
	return func(d app.Deps, c app.Caller) error {
		_, err := app.CreateProfileHandler{Deps: d}.Handle(context.Background(), app.CreateProfile{Caller: c, UID: uid, Username: "ann", Email: "ann@mail.com"})
		return err
	}
}

func change(uid string) func(app.Deps, app.Caller) error {
	return func(d app.Deps, c app.Caller) error {
		_, err := app.ChangeProfileHandler{Deps: d}.Handle(context.Background(), app.ChangeProfile{Caller: c, UID: uid, Username: "robert", Email: "bob1@mail.com"})
		return err
	}
}

func remove(uid string) func(app.Deps, app.Caller) error {
	return func(d app.Deps, c app.Caller) error {
		_, err := app.DeleteProfileHandler{Deps: d}.Handle(context.Background(), app.DeleteProfile{Caller: c, UID: uid})
		return err
	}
}
