package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"profiles/platform/httpx"
)

// seen is what the handler behind the middleware saw.
type seen struct {
	principal Principal
	found     bool
	peer      bool
}

func TestMiddleware(t *testing.T) {
	v := testVerifier(t)
	signer := signedAt(t, testNow, testSecret)
	tok := func(scope string, mod ...func(jwt.MapClaims)) string {
		c := goodClaims("74292b21-0fbb-4f1d-a18f-fa80f947fa5d", scope)
		for _, m := range mod {
			m(c)
		}
		return "Bearer " + sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", c)
	}
	expired := func(c jwt.MapClaims) { c["exp"] = testNow.Add(-time.Hour).Unix() }
	jwtMode := &Authenticator{Mode: ModeJWT, Verifier: v, Signer: signer, Log: testLogger(t)}
	offSigned := &Authenticator{Mode: ModeOff, Signer: signer, Log: testLogger(t)}
	offTrusting := &Authenticator{Mode: ModeOff, Log: testLogger(t)}

	type request struct {
		method, path string
		authz        string
		forwarded    bool // X-Profiles-Forwarded-By
		signed       bool
	}
	tests := []struct {
		name      string
		auth      *Authenticator
		req       request
		status    int
		challenge string // a part of WWW-Authenticate; "" for none
		problem   string // the problem type's slug
		subject   string // the handler's principal ("" for none)
		peer      bool
	}{
		{"health needs nothing", jwtMode, request{"GET", "/healthz", "", false, false}, 200, "", "", "", false},
		{"health never looks at a token", jwtMode, request{"GET", "/readyz", "Bearer garbage", false, false}, 200, "", "", "", false},
		{"no token", jwtMode, request{"GET", "/api/profile/x", "", false, false}, 401, `Bearer realm="profiles"`, "unauthorized", "", false},
		{"another scheme is no token", jwtMode, request{"GET", "/api/profile/x", "Basic dXNlcjpwYXNz", false, false}, 401, `Bearer realm="profiles"`, "unauthorized", "", false},
		{"empty bearer token", jwtMode, request{"GET", "/api/profile/x", "Bearer ", false, false}, 401, `error="invalid_token"`, "unauthorized", "", false},
		{"garbage token", jwtMode, request{"GET", "/api/profile/x", "Bearer garbage", false, false}, 401, `error="invalid_token"`, "unauthorized", "", false},
		{"expired token", jwtMode, request{"GET", "/api/profile/x", tok(ScopeRead, expired), false, false}, 401, `error_description="the token has expired"`, "unauthorized", "", false},
		{"read token reads", jwtMode, request{"GET", "/api/profile/x", tok(ScopeRead), false, false}, 200, "", "", "74292b21-0fbb-4f1d-a18f-fa80f947fa5d", false},
		{"read token reads the change stream", jwtMode, request{"GET", "/api/changes", tok(ScopeRead), false, false}, 200, "", "", "74292b21-0fbb-4f1d-a18f-fa80f947fa5d", false},
		{"read token cannot write", jwtMode, request{"POST", "/api/profile", tok(ScopeRead), false, false}, 403, `error="insufficient_scope", scope="profiles:write"`, "insufficient-scope", "", false},
		{"write token writes", jwtMode, request{"DELETE", "/api/profile/x", tok(ScopeWrite), false, false}, 200, "", "", "74292b21-0fbb-4f1d-a18f-fa80f947fa5d", false},
		{"write token cannot read", jwtMode, request{"GET", "/api/search", tok(ScopeWrite), false, false}, 403, `scope="profiles:read"`, "insufficient-scope", "", false},
		{"write token is no admin", jwtMode, request{"GET", "/admin/view/rebuild", tok(ScopeRead + " " + ScopeWrite), false, false}, 403, `scope="profiles:admin"`, "insufficient-scope", "", false},
		{"debug needs admin", jwtMode, request{"GET", "/debug/assignment", tok(ScopeRead), false, false}, 403, `scope="profiles:admin"`, "insufficient-scope", "", false},
		{"admin token may do anything", jwtMode, request{"POST", "/admin/view/rebuild", tok(ScopeAdmin), false, false}, 200, "", "", "74292b21-0fbb-4f1d-a18f-fa80f947fa5d", false},
		{"forged forward without a token", jwtMode, request{"GET", "/api/profile/x", "", true, false}, 403, "", "invalid-signature", "", false},
		{"forged forward with a valid token", jwtMode, request{"GET", "/api/profile/x", tok(ScopeRead), true, false}, 403, "", "invalid-signature", "", false},
		{"signed forward keeps the caller's identity", jwtMode, request{"PUT", "/api/profile/x", tok(ScopeWrite), true, true}, 200, "", "", "74292b21-0fbb-4f1d-a18f-fa80f947fa5d", true},
		{"signed forward is checked again: read token cannot write", jwtMode, request{"PUT", "/api/profile/x", tok(ScopeRead), true, true}, 403, `scope="profiles:write"`, "insufficient-scope", "", false},
		{"signed forward with an expired token", jwtMode, request{"GET", "/api/profile/x", tok(ScopeRead, expired), true, true}, 401, `error="invalid_token"`, "unauthorized", "", false},
		{"signed peer read without a token", jwtMode, request{"GET", "/api/search", "", false, true}, 200, "", "", "peer", true},
		{"signed peer cannot write without a token", jwtMode, request{"POST", "/api/profile", "", false, true}, 403, `scope="profiles:write"`, "insufficient-scope", "", false},
		{"internal endpoint unsigned", jwtMode, request{"POST", "/internal/claims", "", false, false}, 403, "", "invalid-signature", "", false},
		{"internal endpoint unsigned, with an admin token", jwtMode, request{"POST", "/internal/claims", tok(ScopeAdmin), false, false}, 403, "", "invalid-signature", "", false},
		{"internal endpoint signed", jwtMode, request{"POST", "/internal/claims", "", false, true}, 200, "", "", "peer", true},
		{"off: no token needed", offSigned, request{"DELETE", "/api/profile/x", "", false, false}, 200, "", "", "dev", false},
		{"off: tokens are ignored", offSigned, request{"GET", "/api/profile/x", "Bearer garbage", false, false}, 200, "", "", "dev", false},
		{"off with a secret: forged forward", offSigned, request{"GET", "/api/profile/x", "", true, false}, 403, "", "invalid-signature", "", false},
		{"off with a secret: unsigned internal endpoint", offSigned, request{"DELETE", "/internal/claims", "", false, false}, 403, "", "invalid-signature", "", false},
		{"off with a secret: signed forward", offSigned, request{"GET", "/api/profile/x", "", true, true}, 200, "", "", "dev", true},
		{"off without a secret: forwarding headers are trusted", offTrusting, request{"GET", "/api/profile/x", "", true, false}, 200, "", "", "dev", true},
		{"off without a secret: internal endpoint", offTrusting, request{"POST", "/internal/claims", "", false, false}, 200, "", "", "dev", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got seen
			h := tt.auth.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got.principal, got.found = FromContext(r.Context())
				got.peer = FromPeer(r.Context())
				w.WriteHeader(http.StatusOK)
			}))
			r := httptest.NewRequest(tt.req.method, "http://svc"+tt.req.path, nil)
			if tt.req.authz != "" {
				r.Header.Set("Authorization", tt.req.authz)
			}
			if tt.req.forwarded {
				r.Header.Set("X-Profiles-Forwarded-By", "query-svc-1")
				r.Header.Set("X-Profiles-Routing-Epoch", "1")
			}
			if tt.req.signed {
				signer.Sign(r, nil)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if c := w.Header().Get("WWW-Authenticate"); !strings.Contains(c, tt.challenge) || (tt.challenge == "") != (c == "") {
				t.Fatalf("WWW-Authenticate %q, want it to hold %q", c, tt.challenge)
			}
			if tt.status != http.StatusOK {
				var p httpx.Problem
				if w.Header().Get("Content-Type") != httpx.ProblemContentType || json.Unmarshal(w.Body.Bytes(), &p) != nil ||
					p.Type != "urn:profiles:problem:"+tt.problem || p.Status != tt.status {
					t.Fatalf("problem %s (%s), want type %s", w.Body, w.Header().Get("Content-Type"), tt.problem)
				}
				return
			}
			if got.found != (tt.subject != "") || got.principal.Subject != tt.subject || got.peer != tt.peer {
				t.Fatalf("handler saw %+v, want subject %q and peer %v", got, tt.subject, tt.peer)
			}
		})
	}
}

// A replayed signed request gets the answer of a bad signature; a valid
// one beyond the replay cache's bound gets 503 with Retry-After.
func TestMiddlewareRefusesReplays(t *testing.T) {
	signer := signedAt(t, testNow, testSecret)
	// AUTH_MODE=off, as forward's token is no JWT: signatures are checked
	// all the same.
	a := &Authenticator{Mode: ModeOff, Signer: signer, Log: testLogger(t)}
	h := a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	serve := func(r *http.Request) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	problem := func(w *httptest.ResponseRecorder) string {
		var p httpx.Problem
		if w.Header().Get("Content-Type") != httpx.ProblemContentType || json.Unmarshal(w.Body.Bytes(), &p) != nil || p.Status != w.Code {
			t.Fatalf("not a problem: %s", w.Body)
		}
		return strings.TrimPrefix(p.Type, "urn:profiles:problem:")
	}

	first := forward(t, signer)
	replay := again(first)
	if w := serve(first); w.Code != http.StatusNoContent {
		t.Fatalf("the first request: %d %s", w.Code, w.Body)
	}
	if w := serve(replay); w.Code != http.StatusForbidden || problem(w) != "invalid-signature" {
		t.Fatalf("the replay: %d %s, want 403 invalid-signature", w.Code, w.Body)
	}
	if w := serve(forward(t, signer)); w.Code != http.StatusNoContent {
		t.Fatalf("a fresh request: %d %s", w.Code, w.Body)
	}

	signer.replay.max = signer.replay.len()
	w := serve(forward(t, signer))
	if w.Code != http.StatusServiceUnavailable || problem(w) != "replay-cache-full" || w.Header().Get("Retry-After") == "" {
		t.Fatalf("beyond the bound: %d %s (Retry-After %q), want 503 replay-cache-full", w.Code, w.Body, w.Header().Get("Retry-After"))
	}
	// A replay is still a replay, full or not.
	if w := serve(again(first)); w.Code != http.StatusForbidden {
		t.Fatalf("a replay with the cache full: %d %s, want 403", w.Code, w.Body)
	}
}

func TestAuthenticatorCheck(t *testing.T) {
	v := testVerifier(t)
	signer := signedAt(t, testNow, testSecret)
	tests := []struct {
		name string
		a    Authenticator
		ok   bool
	}{
		{"jwt with keys and a secret", Authenticator{Mode: ModeJWT, Verifier: v, Signer: signer}, true},
		{"jwt without keys", Authenticator{Mode: ModeJWT, Signer: signer}, false},
		{"jwt without INTERNAL_SECRET", Authenticator{Mode: ModeJWT, Verifier: v}, false},
		{"off", Authenticator{Mode: ModeOff}, true},
		{"an unknown mode", Authenticator{Mode: "none"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.a.Check(); (err == nil) != tt.ok {
				t.Fatalf("Check() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestRuleFor(t *testing.T) {
	tests := []struct {
		method, path string
		want         Rule
	}{
		{"GET", "/healthz", Rule{Public: true}},
		{"GET", "/metrics", Rule{Public: true}},
		{"GET", "/routing", Rule{Public: true}},
		{"POST", "/routing", Rule{Scope: ScopeAdmin}},
		{"GET", "/routing/x", Rule{Scope: ScopeAdmin}},
		{"POST", "/internal/claims", Rule{Peer: true}},
		{"GET", "/internal/profiles/x", Rule{Peer: true}},
		{"GET", "/api/profile/x", Rule{Scope: ScopeRead}},
		{"HEAD", "/api/search", Rule{Scope: ScopeRead}},
		{"GET", "/api/changes", Rule{Scope: ScopeRead}},
		{"POST", "/api/profile", Rule{Scope: ScopeWrite}},
		{"PUT", "/api/profile/x", Rule{Scope: ScopeWrite}},
		{"DELETE", "/api/profile/x", Rule{Scope: ScopeWrite}},
		{"GET", "/admin/view/rebuild", Rule{Scope: ScopeAdmin}},
		{"GET", "/debug/assignment", Rule{Scope: ScopeAdmin}},
		{"GET", "/anything-new", Rule{Scope: ScopeAdmin}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			if got := RuleFor(tt.method, tt.path); got != tt.want {
				t.Fatalf("RuleFor = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRateKey(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		principal *Principal
		peer      bool
		wantKey   string
		wantOK    bool
	}{
		{"a token's subject", "/api/profile/x", &Principal{Kind: KindToken, Subject: "alice"}, false, "sub:alice", true},
		{"no token: the client's address", "/api/profile/x", nil, false, "ip:192.0.2.7", true},
		{"dev: the client's address", "/api/profile/x", &Dev, false, "ip:192.0.2.7", true},
		{"a peer's request is not counted again", "/api/profile/x", &Principal{Kind: KindToken, Subject: "alice"}, true, "", false},
		{"health is not limited", "/readyz", nil, false, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.path, nil)
			r.RemoteAddr = "192.0.2.7:4711"
			ctx := withPeer(r.Context(), tt.peer)
			if tt.principal != nil {
				ctx = WithPrincipal(ctx, *tt.principal)
			}
			key, ok := RateKey(r.WithContext(ctx))
			if key != tt.wantKey || ok != tt.wantOK {
				t.Fatalf("RateKey = %q, %v; want %q, %v", key, ok, tt.wantKey, tt.wantOK)
			}
		})
	}
}
