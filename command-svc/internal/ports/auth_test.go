package ports

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"profiles/command-svc/internal/app"
	"profiles/events"
	"profiles/platform/auth"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/routing"
	"profiles/platform/service"
)

// ownerCommands fakes the use cases: it records each command, and applies
// the owner rule as app does (ErrNotOwner unless the caller is an admin or
// the uid is its subject).
type ownerCommands struct {
	creates []app.CreateProfile
	changes []app.ChangeProfile
	deletes []app.DeleteProfile
}

func ownerErr(c app.Caller, uid string) error {
	if c.Admin || (c.Subject != "" && c.Subject == uid) {
		return nil
	}
	return app.ErrNotOwner
}

// ownerHandle records cmd in log and answers as the use case would: ErrNotOwner
// unless caller may act on uid, else p.
func ownerHandle[C any](log *[]C, cmd C, caller app.Caller, uid string, p events.Profile) (app.Result, error) {
	*log = append(*log, cmd)
	if err := ownerErr(caller, uid); err != nil {
		return app.Result{}, err
	}
	return app.Result{Visible: true, Profile: p}, nil
}

type ownerCreate struct{ c *ownerCommands }

func (f ownerCreate) Handle(_ context.Context, cmd app.CreateProfile) (app.Result, error) {
	return ownerHandle(&f.c.creates, cmd, cmd.Caller, cmd.UID, events.Profile{UID: cmd.UID, Username: cmd.Username, Email: cmd.Email, Version: 1})
}

type ownerChange struct{ c *ownerCommands }

func (f ownerChange) Handle(_ context.Context, cmd app.ChangeProfile) (app.Result, error) {
	return ownerHandle(&f.c.changes, cmd, cmd.Caller, cmd.UID, events.Profile{UID: cmd.UID, Username: cmd.Username, Email: cmd.Email, Version: 2})
}

type ownerDelete struct{ c *ownerCommands }

func (f ownerDelete) Handle(_ context.Context, cmd app.DeleteProfile) (app.Result, error) {
	return ownerHandle(&f.c.deletes, cmd, cmd.Caller, cmd.UID, events.Profile{UID: cmd.UID, Version: 2, Deleted: true})
}

const (
	ownerUID = "74292b21-0fbb-4f1d-a18f-fa80f947fa5d"
	otherUID = "0b7f6c1e-3d0a-4c7e-9f5e-1d2c3b4a5f60"
	newUID   = "11111111-2222-4333-8444-555555555555"
)

// TestPrincipalsBecomeCallers checks how the HTTP port maps the
// authenticated principal onto commands: which uid a POST creates, and who
// may change and delete which profile.
func TestPrincipalsBecomeCallers(t *testing.T) {
	owner := auth.Principal{Kind: auth.KindToken, Subject: ownerUID, Scopes: []string{auth.ScopeWrite}}
	notUUID := auth.Principal{Kind: auth.KindToken, Subject: "alice@idp", Scopes: []string{auth.ScopeWrite}}
	admin := auth.Principal{Kind: auth.KindToken, Subject: "ops", Scopes: []string{auth.ScopeAdmin}}
	tests := []struct {
		name      string
		principal *auth.Principal // nil: none in the context
		method    string
		path      string
		key       string // Idempotency-Key
		status    int
		problem   string // the problem type's slug, for an error
		wantUID   string // the command's uid
		wantAdmin bool
		// wantIdempotent: the uid comes from the Idempotency-Key (a
		// retry is a replay); never for a caller's own profile.
		wantIdempotent bool
	}{
		{"POST by a writer creates the profile of its sub", &owner, "POST", "/api/profile", "", 201, "", ownerUID, false, false},
		{"POST by a writer ignores the Idempotency-Key for the uid", &owner, "POST", "/api/profile", "order-1", 201, "", ownerUID, false, false},
		{"POST by a writer whose sub is not a UUID", &notUUID, "POST", "/api/profile", "", 403, "not-owner", "", false, false},
		{"POST by an admin gets a new uid", &admin, "POST", "/api/profile", "", 201, "", newUID, true, false},
		{"POST by an admin with an Idempotency-Key", &admin, "POST", "/api/profile", "order-1", 201, "", app.UIDForKey("order-1"), true, true},
		{"POST under AUTH_MODE=off is as before", &auth.Dev, "POST", "/api/profile", "order-1", 201, "", app.UIDForKey("order-1"), true, true},
		{"POST without any principal: a new uid, which the app refuses", nil, "POST", "/api/profile", "", 403, "not-owner", newUID, false, false},
		{"PUT of one's own profile", &owner, "PUT", "/api/profile/" + ownerUID, "", 200, "", ownerUID, false, false},
		{"PUT of another's profile", &owner, "PUT", "/api/profile/" + otherUID, "", 403, "not-owner", otherUID, false, false},
		{"PUT of another's profile by an admin", &admin, "PUT", "/api/profile/" + otherUID, "", 200, "", otherUID, true, false},
		{"DELETE of one's own profile", &owner, "DELETE", "/api/profile/" + ownerUID, "", 204, "", ownerUID, false, false},
		{"DELETE of another's profile", &owner, "DELETE", "/api/profile/" + otherUID, "", 403, "not-owner", otherUID, false, false},
		{"DELETE without any principal is refused by the app", nil, "DELETE", "/api/profile/" + otherUID, "", 403, "not-owner", otherUID, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &ownerCommands{}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			r := service.NewRouter(log, &httpx.Health{})
			r.Use(func(next http.Handler) http.Handler { // stands in for the auth middleware
				return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
					if tt.principal != nil {
						req = req.WithContext(auth.WithPrincipal(req.Context(), *tt.principal))
					}
					next.ServeHTTP(w, req)
				})
			})
			HTTP{
				Log:         log,
				Routing:     routing.Routing{Router: selfRouter{}, Self: kafkax.Member{ID: "test"}, Wait: time.Second, Log: log},
				PartitionOf: func(string) int32 { return 0 },
				EmailKey:    normalized{},
				NewUID:      func(string) string { return newUID },
				Commands:    Commands{CreateProfile: ownerCreate{c}, ChangeProfile: ownerChange{c}, DeleteProfile: ownerDelete{c}},
			}.Register(r)

			var body io.Reader
			if tt.method != "DELETE" {
				body = strings.NewReader(`{"username":"bob","email":"bob@mail.com"}`)
			}
			req := httptest.NewRequest(tt.method, tt.path, body)
			req.Header.Set("Content-Type", "application/json")
			if tt.key != "" {
				req.Header.Set(HeaderIdempotencyKey, tt.key)
			}
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.problem != "" {
				var p httpx.Problem
				if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Type != "urn:profiles:problem:"+tt.problem {
					t.Fatalf("problem %s, want %s", w.Body, tt.problem)
				}
			}
			var uid string
			var caller app.Caller
			switch {
			case len(c.creates) == 1:
				uid, caller = c.creates[0].UID, c.creates[0].Caller
				if c.creates[0].Idempotent != tt.wantIdempotent {
					t.Fatalf("Idempotent = %v with key %q", c.creates[0].Idempotent, tt.key)
				}
			case len(c.changes) == 1:
				uid, caller = c.changes[0].UID, c.changes[0].Caller
			case len(c.deletes) == 1:
				uid, caller = c.deletes[0].UID, c.deletes[0].Caller
			}
			if uid != tt.wantUID || (tt.wantUID != "" && caller.Admin != tt.wantAdmin) {
				t.Fatalf("command uid %q by %+v, want uid %q (admin %v)", uid, caller, tt.wantUID, tt.wantAdmin)
			}
		})
	}
}
