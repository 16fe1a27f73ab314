package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"profiles/platform/auth"
	"profiles/platform/peer"
)

// idp is the tests' identity provider: it signs tokens with keys made for
// the test, and hands the services only its public keys, as a JWKS file.
type idp struct {
	rsa      *rsa.PrivateKey // kid e2e-rsa, RS256
	ec       *ecdsa.PrivateKey
	audience string
	issuer   string
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &idp{rsa: r, ec: e, audience: "profiles-e2e", issuer: "https://idp.e2e.example"}
}

// jwksFile writes the public keys to a JWKS file in t.TempDir().
func (p *idp) jwksFile(t *testing.T) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	ecPub, err := p.ec.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	point := ecPub.Bytes() // 0x04 || X || Y
	set := map[string]any{"keys": []map[string]any{
		{"kty": "RSA", "kid": "e2e-rsa", "alg": "RS256", "use": "sig", "n": b64(p.rsa.N.Bytes()), "e": b64(big.NewInt(int64(p.rsa.E)).Bytes())},
		{"kty": "EC", "kid": "e2e-ec", "alg": "ES256", "use": "sig", "crv": "P-256", "x": b64(point[1:33]), "y": b64(point[33:65])},
	}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// token returns "Bearer <JWT>" for sub with scope, valid for an hour;
// change adjusts the claims. ES256 tokens come from the EC key.
func (p *idp) token(t *testing.T, sub, scope string, es256 bool, change ...func(jwt.MapClaims)) string {
	t.Helper()
	now := time.Now()
	claims := jwt.MapClaims{"sub": sub, "scope": scope, "aud": p.audience, "iss": p.issuer,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix()}
	for _, c := range change {
		c(claims)
	}
	method, key, kid := jwt.SigningMethod(jwt.SigningMethodRS256), any(p.rsa), "e2e-rsa"
	if es256 {
		method, key, kid = jwt.SigningMethodES256, p.ec, "e2e-ec"
	}
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + s
}

// startSecured starts a system with AUTH_MODE=jwt: the idp's JWKS, its
// audience and issuer, and a fresh INTERNAL_SECRET, which it returns.
func startSecured(t *testing.T, p *idp, opts Options) (*System, string) {
	t.Helper()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	opts.Env = map[string]string{
		"AUTH_MODE":       "jwt",
		"AUTH_JWKS_FILE":  p.jwksFile(t),
		"AUTH_AUDIENCE":   p.audience,
		"AUTH_ISSUER":     p.issuer,
		"INTERNAL_SECRET": hex.EncodeToString(secret),
	}
	return StartSystem(t, opts), hex.EncodeToString(secret)
}

// cell is the expected answer of one endpoint to one credential.
type cell struct {
	status  int
	problem string // the problem type's slug of an error
}

var (
	ok200      = cell{http.StatusOK, ""}
	created201 = cell{http.StatusCreated, ""}
	gone204    = cell{http.StatusNoContent, ""}
	unauth401  = cell{http.StatusUnauthorized, "unauthorized"}
	scope403   = cell{http.StatusForbidden, "insufficient-scope"}
	owner403   = cell{http.StatusForbidden, "not-owner"}
)

// The credentials of the matrix, in its column order.
const (
	credNone     = "no token"
	credExpired  = "expired"
	credAudience = "wrong audience"
	credOtherSub = "wrong sub"
	credReadOnly = "read-only scope"
	credOwner    = "owner"
	credAdmin    = "admin"
)

var matrixCreds = []string{credNone, credExpired, credAudience, credOtherSub, credReadOnly, credOwner, credAdmin}

// TestAuthMatrix sends every endpoint with every kind of credential, through
// the front door and straight to each instance of the service behind it
// (two of each, so that one of them forwards to the owner), and checks the
// status. The tokens:
//
//   - no token: no Authorization header;
//   - expired: the owner's token, expired an hour ago;
//   - wrong audience: the owner's token for another API;
//   - wrong sub: a reader and writer whose sub is another uid, V;
//   - read-only scope: the owner's sub, with profiles:read only;
//   - owner: sub U, with profiles:read and profiles:write;
//   - admin: sub "ops-admin" (not a uid), with profiles:admin (ES256).
//
// The matrix (one row per endpoint, in the order they run; U is the
// owner's profile):
//
//	endpoint                          none  expired  wrong-aud  wrong-sub  read-only  owner  admin
//	POST   /api/profile                401  401      401        201 (V)    403        201 U  201 (A)
//	GET    /api/profile/U              401  401      401        200        200        200    200
//	GET    /api/search?email=          401  401      401        200        200        200    200
//	GET    /api/profile/U/history      401  401      401        200        200        200    200
//	GET    /api/changes                401  401      401        200        200        200    200
//	PUT    /api/profile/U              401  401      401        403 owner  403 scope  200    200
//	DELETE /api/profile/U (admin: A)   401  401      401        403 owner  403 scope  204    204
//	GET    /admin/view/rebuild         401  401      401        403 scope  403 scope  403    200
//
// Without profiles:admin, a POST creates the profile whose uid is the
// token's sub (the owner's is U, the wrong sub's is V), and a second POST
// of the owner gets 409 profile-exists. Reads are open to every reader.
// /admin/ is served by each query-svc instance only (not the front door).
func TestAuthMatrix(t *testing.T) {
	p := newIDP(t)
	s, _ := startSecured(t, p, Options{Query: 2, Command: 2})
	run := strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	uidU, uidV := uuid.NewString(), uuid.NewString()
	tokens := map[string]string{
		credNone:     "",
		credExpired:  p.token(t, uidU, "profiles:read profiles:write", false, func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }),
		credAudience: p.token(t, uidU, "profiles:read profiles:write", false, func(c jwt.MapClaims) { c["aud"] = "another-api" }),
		credOtherSub: p.token(t, uidV, "profiles:read profiles:write", false),
		credReadOnly: p.token(t, uidU, "profiles:read", false),
		credOwner:    p.token(t, uidU, "profiles:read profiles:write", false),
		credAdmin:    p.token(t, "ops-admin", "profiles:admin", true),
	}
	email := func(cred string) string {
		return strings.ReplaceAll(cred, " ", "-") + "-" + run + "@auth.example"
	}
	created := map[string]string{}  // the uid each credential's POST created
	servedBy := map[string]string{} // the command-svc instance that owns each created uid

	type endpoint struct {
		name string
		// kind is the service whose instances it is sent to, besides the
		// front door ("query-svc" alone: not through the front door).
		kind      string
		frontDoor bool
		raw       bool // not checked against the OpenAPI document (the stream, /admin/)
		routed    bool // a 2xx must have been forwarded at least once
		request   func(cred string) (method, path string, body any, header map[string]string)
		want      map[string]cell
		// once tells which credentials' successes are sent once only (a
		// second would be another answer): to the instance that does not
		// own the profile when that is known, else to the first one.
		once func(cred string) bool
	}
	read := func(path string) func(string) (string, string, any, map[string]string) {
		return func(string) (string, string, any, map[string]string) { return http.MethodGet, path, nil, nil }
	}
	readers := map[string]cell{credNone: unauth401, credExpired: unauth401, credAudience: unauth401,
		credOtherSub: ok200, credReadOnly: ok200, credOwner: ok200, credAdmin: ok200}
	endpoints := []endpoint{
		{
			name: "POST /api/profile", kind: "command-svc", frontDoor: true, routed: true,
			// The admin's POST goes to every entry with the same body and
			// Idempotency-Key: the first creates, the others replay it (201
			// too). Without profiles:admin the key does not pick the uid
			// (the sub does) and a second POST is 409 (checked below).
			once: func(cred string) bool { return cred != credAdmin },
			request: func(cred string) (string, string, any, map[string]string) {
				return http.MethodPost, "/api/profile", map[string]string{"username": "user", "email": email(cred)},
					map[string]string{"Idempotency-Key": "auth-" + run + "-" + strings.ReplaceAll(cred, " ", "-")}
			},
			want: map[string]cell{credNone: unauth401, credExpired: unauth401, credAudience: unauth401,
				credOtherSub: created201, credReadOnly: scope403, credOwner: created201, credAdmin: created201},
		},
		{name: "GET /api/profile/U", kind: "query-svc", frontDoor: true, routed: true, request: read("/api/profile/" + uidU), want: readers},
		{name: "GET /api/search?email=", kind: "query-svc", frontDoor: true, routed: true, request: read("/api/search?email=" + email(credOwner)), want: readers},
		{name: "GET /api/profile/U/history", kind: "query-svc", frontDoor: true, routed: true, request: read("/api/profile/" + uidU + "/history"), want: readers},
		{name: "GET /api/changes", kind: "query-svc", frontDoor: true, raw: true, request: read("/api/changes"), want: readers},
		{
			name: "PUT /api/profile/U", kind: "command-svc", frontDoor: true, routed: true,
			request: func(cred string) (string, string, any, map[string]string) {
				return http.MethodPut, "/api/profile/" + uidU, map[string]string{"username": "renamed-by-" + strings.ReplaceAll(cred, " ", "-"), "email": email(credOwner)}, nil
			},
			want: map[string]cell{credNone: unauth401, credExpired: unauth401, credAudience: unauth401,
				credOtherSub: owner403, credReadOnly: scope403, credOwner: ok200, credAdmin: ok200},
		},
		{
			name: "DELETE /api/profile/U (admin: A)", kind: "command-svc", frontDoor: true, routed: true,
			once: func(string) bool { return true },
			request: func(cred string) (string, string, any, map[string]string) {
				if cred == credAdmin {
					return http.MethodDelete, "/api/profile/" + created[credAdmin], nil, nil
				}
				return http.MethodDelete, "/api/profile/" + uidU, nil, nil
			},
			want: map[string]cell{credNone: unauth401, credExpired: unauth401, credAudience: unauth401,
				credOtherSub: owner403, credReadOnly: scope403, credOwner: gone204, credAdmin: gone204},
		},
		{
			name: "GET /admin/view/rebuild", kind: "query-svc", raw: true, request: read("/admin/view/rebuild"),
			want: map[string]cell{credNone: unauth401, credExpired: unauth401, credAudience: unauth401,
				credOtherSub: scope403, credReadOnly: scope403, credOwner: scope403, credAdmin: ok200},
		},
	}

	for _, ep := range endpoints {
		forwarded := false
		for _, cred := range matrixCreds {
			want := ep.want[cred]
			method, path, body, header := ep.request(cred)
			if header == nil {
				header = map[string]string{}
			}
			header["Authorization"] = tokens[cred]
			entries := s.Instances(ep.kind)
			if ep.frontDoor {
				entries = append([]string{"frontdoor"}, entries...)
			}
			if ep.once != nil && ep.once(cred) && want.status < 300 {
				// Send it where it must be forwarded, if that is known.
				target := strings.TrimPrefix(path, "/api/profile/")
				entries = nil
				for _, name := range s.Instances(ep.kind) {
					if name != servedBy[target] {
						entries = append(entries, name)
						break
					}
				}
			}
			for _, entry := range entries {
				var r Response
				if ep.raw {
					r = s.rawDo(t, entry, method, path, header)
				} else {
					r = s.DoAt(entry, method, path, body, header)
				}
				where := fmt.Sprintf("%s, %s, via %s", ep.name, cred, entry)
				checkCell(t, where, r, want)
				if want.status < 300 && r.Header.Get("X-Profiles-Hops") == "1" {
					forwarded = true
				}
				if method == http.MethodPost && r.Status == http.StatusCreated {
					var prof profile
					r.JSON(t, &prof)
					created[cred] = prof.UID
					servedBy[prof.UID] = r.Header.Get("X-Served-By")
				}
			}
		}
		if ep.routed && !forwarded {
			t.Errorf("%s: no successful request was forwarded between instances", ep.name)
		}
		if ep.name == "POST /api/profile" {
			// Without profiles:admin, a POST creates the profile of the
			// token's sub; a second one finds it taken.
			if created[credOwner] != uidU || created[credOtherSub] != uidV || created[credAdmin] == "" || created[credAdmin] == uidU {
				t.Fatalf("created %v; want the owner's uid %s and the wrong sub's %s", created, uidU, uidV)
			}
			for _, entry := range s.Instances("command-svc") {
				r := s.DoAt(entry, http.MethodPost, "/api/profile", map[string]string{"username": "again", "email": "again-" + email(credOwner)},
					map[string]string{"Authorization": tokens[credOwner]})
				checkCell(t, "a second POST of the owner via "+entry, r, cell{http.StatusConflict, "profile-exists"})
			}
		}
	}
}

// checkCell fails the test unless r is the expected answer: its status,
// for an error its problem type, and for 401 the RFC 6750 challenge.
func checkCell(t *testing.T, where string, r Response, want cell) {
	t.Helper()
	if r.Status != want.status {
		t.Errorf("%s: status %d, want %d: %s", where, r.Status, want.status, r.Body)
		return
	}
	if want.problem == "" {
		return
	}
	var prob struct {
		Type string `json:"type"`
	}
	if r.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(r.Body, &prob) != nil ||
		prob.Type != "urn:profiles:problem:"+want.problem {
		t.Errorf("%s: %s %s, want the problem %s", where, r.Header.Get("Content-Type"), r.Body, want.problem)
	}
	challenge := r.Header.Get("WWW-Authenticate")
	switch {
	case want.status == http.StatusUnauthorized && !strings.HasPrefix(challenge, `Bearer realm="profiles"`):
		t.Errorf("%s: WWW-Authenticate %q", where, challenge)
	case want.problem == "insufficient-scope" && !strings.Contains(challenge, `error="insufficient_scope"`):
		t.Errorf("%s: WWW-Authenticate %q", where, challenge)
	}
}

// rawDo sends a request outside the OpenAPI document (/admin/), or one
// whose body never ends (the change stream: only its status and headers
// are read), to an instance.
func (s *System) rawDo(t *testing.T, name, method, path string, header map[string]string) Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.URLOf(name)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s at %s: %v", method, path, name, err)
	}
	defer resp.Body.Close()
	r := Response{Status: resp.StatusCode, Header: resp.Header}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel() // the stream stays open: leave it
		return r
	}
	r.Body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return r
}

// signed returns header plus the signature headers that an instance with
// secret (and the clock now) would add to this request.
func signed(t *testing.T, secret string, now time.Time, method, path string, body []byte, header map[string]string) map[string]string {
	t.Helper()
	signer, err := auth.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	signer.Now = func() time.Time { return now }
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	signer.Sign(req, body)
	out := map[string]string{}
	for k, v := range header {
		out[k] = v
	}
	out[auth.HeaderNonce] = req.Header.Get(auth.HeaderNonce)
	out[auth.HeaderTimestamp] = req.Header.Get(auth.HeaderTimestamp)
	out[auth.HeaderSignature] = req.Header.Get(auth.HeaderSignature)
	return out
}

// TestForgedForwardingIsRejected: a request that claims to be forwarded by
// another instance (X-Profiles-Forwarded-By, X-Profiles-Routing-Epoch,
// X-Profiles-Uid), sent straight to an instance's own port, is refused
// with 403 unless the instances' signature is valid, with or without a
// valid caller token; and so are the internal endpoints. A correctly
// signed request with the same headers is served, which shows that the
// signature is what decides. Through the front door the same headers are
// stripped, and the request is served as a client's.
func TestForgedForwardingIsRejected(t *testing.T) {
	p := newIDP(t)
	s, secret := startSecured(t, p, Options{})
	admin := p.token(t, "ops-admin", "profiles:admin", true)

	r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "victim", "email": "victim-" + uuid.NewString()[:8] + "@auth.example"},
		map[string]string{"Authorization": admin})
	if r.Status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.Status, r.Body)
	}
	var victim profile
	r.JSON(t, &victim)

	forged := map[string]string{"X-Profiles-Forwarded-By": "query-svc-9", "X-Profiles-Routing-Epoch": "1"}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range forged {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	putBody := []byte(`{"username":"hijacked","email":"` + victim.Email + `"}`)
	targets := []struct {
		instance, method, path string
		body                   []byte
		// ok answers a correctly signed request with the admin's token,
		// peer one without a token: a peer may read, and nothing more.
		ok, peer int
	}{
		{"query-svc-0", http.MethodGet, "/api/profile/" + victim.UID, nil, http.StatusOK, http.StatusOK},
		{"command-svc-0", http.MethodPut, "/api/profile/" + victim.UID, putBody, http.StatusOK, http.StatusForbidden},
	}
	now := time.Now()
	for _, tg := range targets {
		tokenOnly := map[string]string{"Authorization": admin}
		cases := []struct {
			name   string
			header map[string]string
			want   int
		}{
			{"forged headers, no token", with(nil), http.StatusForbidden},
			{"forged headers, a valid admin token", with(tokenOnly), http.StatusForbidden},
			{"forged headers and a made-up signature", with(map[string]string{"Authorization": admin,
				auth.HeaderTimestamp: fmt.Sprint(now.Unix()), auth.HeaderSignature: "v1=" + strings.Repeat("0", 64)}), http.StatusForbidden},
			{"signed with another secret", signed(t, strings.Repeat("x", 32), now, tg.method, tg.path, tg.body, with(tokenOnly)), http.StatusForbidden},
			{"signed two minutes ago (a replay)", signed(t, secret, now.Add(-2*time.Minute), tg.method, tg.path, tg.body, with(tokenOnly)), http.StatusForbidden},
			{"signed correctly, no token", signed(t, secret, now, tg.method, tg.path, tg.body, with(nil)), tg.peer},
			{"signed correctly, with the token", signed(t, secret, now, tg.method, tg.path, tg.body, with(tokenOnly)), tg.ok},
		}
		for _, c := range cases {
			var body any
			if tg.body != nil {
				body = tg.body
			}
			r := s.DoAt(tg.instance, tg.method, tg.path, body, c.header)
			where := fmt.Sprintf("%s %s at %s, %s", tg.method, tg.path, tg.instance, c.name)
			if r.Status != c.want {
				t.Errorf("%s: status %d, want %d: %s", where, r.Status, c.want, r.Body)
				continue
			}
			if c.want == http.StatusForbidden && !strings.Contains(string(r.Body), "urn:profiles:problem:") {
				t.Errorf("%s: %s is not a problem", where, r.Body)
			}
		}
	}

	// A forged X-Profiles-Uid on a POST no longer picks a uid.
	r = s.DoAt("command-svc-0", http.MethodPost, "/api/profile", map[string]string{"username": "x", "email": "x-" + uuid.NewString()[:8] + "@auth.example"},
		with(map[string]string{"Authorization": admin, "X-Profiles-Uid": victim.UID}))
	checkCell(t, "POST with a forged X-Profiles-Uid", r, cell{http.StatusForbidden, "invalid-signature"})

	// The internal endpoints need the signature, whatever the token, and
	// serve a signed request once: command-svc's, and query-svc's wait for
	// a write to be visible (command-svc's read-your-writes).
	claim := []byte(`{"email":"claim-` + uuid.NewString()[:8] + `@auth.example","uid":"` + uuid.NewString() + `"}`)
	claimSigned := signed(t, secret, now, http.MethodPost, "/internal/claims", claim, map[string]string{})
	visible := peer.VisiblePath(victim.UID, 1, nil)
	internal := []struct {
		name, at, method, path string
		body                   []byte
		header                 map[string]string
		want                   int
	}{
		{"claim without a signature", "command-svc-0", http.MethodPost, "/internal/claims", claim, map[string]string{"Authorization": admin}, http.StatusForbidden},
		{"state without a signature", "command-svc-0", http.MethodGet, "/internal/profiles/" + victim.UID, nil, map[string]string{"Authorization": admin}, http.StatusForbidden},
		{"state with a made-up signature", "command-svc-0", http.MethodGet, "/internal/profiles/" + victim.UID, nil,
			map[string]string{auth.HeaderTimestamp: fmt.Sprint(now.Unix()), auth.HeaderSignature: "v1=" + strings.Repeat("ab", 32)}, http.StatusForbidden},
		{"claim signed", "command-svc-0", http.MethodPost, "/internal/claims", claim, claimSigned, http.StatusNoContent},
		{"the same signed claim again (a replay)", "command-svc-0", http.MethodPost, "/internal/claims", claim, claimSigned, http.StatusForbidden},
		{"state signed", "command-svc-0", http.MethodGet, "/internal/profiles/" + victim.UID, nil, signed(t, secret, now, http.MethodGet, "/internal/profiles/"+victim.UID, nil, map[string]string{}), http.StatusOK},
		{"visibility wait without a signature", "query-svc-0", http.MethodGet, visible, nil, map[string]string{"Authorization": admin}, http.StatusForbidden},
		{"visibility wait signed", "query-svc-0", http.MethodGet, visible, nil, signed(t, secret, now, http.MethodGet, visible, nil, map[string]string{}), http.StatusNoContent},
	}
	for _, c := range internal {
		req, err := http.NewRequest(c.method, s.URLOf(c.at)+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.body != nil {
			req, _ = http.NewRequest(c.method, s.URLOf(c.at)+c.path, strings.NewReader(string(c.body)))
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		resp, err := s.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d: %s", c.name, resp.StatusCode, c.want, b)
		}
	}

	// Through the front door, X-Profiles-* headers never reach the
	// services: the request is a client's, and is served as such.
	r = s.Do(http.MethodGet, "/api/profile/"+victim.UID, nil, with(map[string]string{"Authorization": admin}))
	if r.Status != http.StatusOK {
		t.Errorf("GET through the front door with forged headers: %d %s", r.Status, r.Body)
	}
}
