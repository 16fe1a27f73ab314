package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The keys of the tests' identity provider, generated once per run.
var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey // kid "rsa-1", RS256
	ecKey    *ecdsa.PrivateKey
	otherRSA *rsa.PrivateKey // signs with kid "rsa-1" too: a forgery
)

const (
	testAudience = "profiles-api"
	testIssuer   = "https://idp.example"
)

// testNow is the verifiers' clock in these tests.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testKeys(t *testing.T) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if otherRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	})
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// rsaJWK and ecJWK are the public JWKs of a key.
func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
		"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(t *testing.T, kid string, k *ecdsa.PublicKey) map[string]any {
	t.Helper()
	pub, err := k.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	point := pub.Bytes() // 0x04 || X || Y
	return map[string]any{"kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
		"x": b64(point[1:33]), "y": b64(point[33:65])}
}

func jwksJSON(t *testing.T, keys ...map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testVerifier trusts rsaKey (kid rsa-1) and ecKey (kid ec-1).
func testVerifier(t *testing.T) *Verifier {
	t.Helper()
	testKeys(t)
	keys, err := KeysFromJSON(jwksJSON(t, rsaJWK("rsa-1", &rsaKey.PublicKey), ecJWK(t, "ec-1", &ecKey.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(VerifierConfig{Keys: keys, Audience: testAudience, Issuer: testIssuer, Leeway: 30 * time.Second,
		Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// goodClaims are valid claims for sub, with the given scope.
func goodClaims(sub, scope string) jwt.MapClaims {
	return jwt.MapClaims{
		"sub": sub, "aud": testAudience, "iss": testIssuer, "scope": scope,
		"iat": testNow.Add(-time.Minute).Unix(), "exp": testNow.Add(time.Hour).Unix(),
	}
}

// sign returns the token of claims, signed with method and key, with kid
// in its header ("" for none).
func sign(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for key, val := range c {
		out[key] = val
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

func TestVerifier(t *testing.T) {
	v := testVerifier(t)
	good := goodClaims("74292b21-0fbb-4f1d-a18f-fa80f947fa5d", "profiles:read profiles:write")
	pubDER, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	tests := []struct {
		name       string
		token      string
		wantErr    error // nil: valid; else also ErrInvalidToken
		wantScopes []string
	}{
		{"RS256 token", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", good), nil, []string{ScopeRead, ScopeWrite}},
		{"ES256 token", sign(t, jwt.SigningMethodES256, ecKey, "ec-1", good), nil, []string{ScopeRead, ScopeWrite}},
		{"token without kid is tried with every key", sign(t, jwt.SigningMethodES256, ecKey, "", good), nil, []string{ScopeRead, ScopeWrite}},
		{"scp list instead of scope", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", with(with(good, "scope", nil), "scp", []string{"profiles:admin"})), nil, []string{ScopeAdmin}},
		{"missing scope: valid, but may only read", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", with(good, "scope", "profiles:read")), nil, []string{ScopeRead}},
		{"expired within the leeway", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", with(good, "exp", testNow.Add(-10*time.Second).Unix())), nil, []string{ScopeRead, ScopeWrite}},
		{"expired", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", with(good, "exp", testNow.Add(-time.Minute).Unix())), jwt.ErrTokenExpired, nil},
		{"not yet valid", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", with(good, "nbf", testNow.Add(time.Minute).Unix())), jwt.ErrTokenNotValidYet, nil},
		{"no exp", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", with(good, "exp", nil)), jwt.ErrTokenRequiredClaimMissing, nil},
		{"wrong audience", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", with(good, "aud", "another-api")), jwt.ErrTokenInvalidAudience, nil},
		{"no audience", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", with(good, "aud", nil)), jwt.ErrTokenRequiredClaimMissing, nil},
		{"wrong issuer", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", with(good, "iss", "https://evil.example")), jwt.ErrTokenInvalidIssuer, nil},
		{"no sub", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", with(good, "sub", nil)), jwt.ErrTokenRequiredClaimMissing, nil},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa-1", good), jwt.ErrTokenSignatureInvalid, nil},
		{"HS256 with the public key as the secret", sign(t, jwt.SigningMethodHS256, pubPEM, "rsa-1", good), jwt.ErrTokenSignatureInvalid, nil},
		{"HS256 with the DER public key as the secret", sign(t, jwt.SigningMethodHS256, pubDER, "rsa-1", good), jwt.ErrTokenSignatureInvalid, nil},
		{"RS384, an algorithm not allowed", sign(t, jwt.SigningMethodRS384, rsaKey, "rsa-1", good), jwt.ErrTokenSignatureInvalid, nil},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-2", good), jwt.ErrTokenUnverifiable, nil},
		{"known kid, signed by another key", sign(t, jwt.SigningMethodRS256, otherRSA, "rsa-1", good), jwt.ErrTokenSignatureInvalid, nil},
		{"ES256 under the RSA key's kid", sign(t, jwt.SigningMethodES256, ecKey, "rsa-1", good), jwt.ErrTokenUnverifiable, nil},
		{"malformed", "not.a.token", jwt.ErrTokenMalformed, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := v.Verify(context.Background(), tt.token)
			if tt.wantErr != nil {
				if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want ErrInvalidToken and %v", err, tt.wantErr)
				}
				if d := describe(err); d == "" {
					t.Fatal("no description")
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v, want a valid token", err)
			}
			if p.Kind != KindToken || p.Subject != "74292b21-0fbb-4f1d-a18f-fa80f947fa5d" || p.Expires.IsZero() {
				t.Fatalf("principal %+v", p)
			}
			if len(p.Scopes) != len(tt.wantScopes) {
				t.Fatalf("scopes %v, want %v", p.Scopes, tt.wantScopes)
			}
			for _, s := range tt.wantScopes {
				if !p.Has(s) {
					t.Fatalf("scopes %v lack %s", p.Scopes, s)
				}
			}
		})
	}
}

func TestPrincipalScopes(t *testing.T) {
	tests := []struct {
		name  string
		p     Principal
		scope string
		want  bool
		admin bool
	}{
		{"read holds read", Principal{Scopes: []string{ScopeRead}}, ScopeRead, true, false},
		{"read lacks write", Principal{Scopes: []string{ScopeRead}}, ScopeWrite, false, false},
		{"write lacks read (scopes are separate)", Principal{Scopes: []string{ScopeWrite}}, ScopeRead, false, false},
		{"admin implies write", Principal{Scopes: []string{ScopeAdmin}}, ScopeWrite, true, true},
		{"the empty scope is held by anyone", Principal{}, "", true, false},
		{"peer reads only", Peer, ScopeWrite, false, false},
		{"dev may do anything", Dev, ScopeAdmin, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Has(tt.scope); got != tt.want {
				t.Fatalf("Has(%q) = %v", tt.scope, got)
			}
			if tt.p.Admin() != tt.admin {
				t.Fatalf("Admin() = %v", tt.p.Admin())
			}
		})
	}
}

func TestKeysFromJSONAcceptsOnlyPublicRSAAndECKeys(t *testing.T) {
	testKeys(t)
	priv := rsaJWK("rsa-1", &rsaKey.PublicKey)
	priv["d"] = b64(rsaKey.D.Bytes())
	hs := rsaJWK("rsa-1", &rsaKey.PublicKey)
	hs["alg"] = "HS256"
	tests := []struct {
		name string
		raw  []byte
		ok   bool
	}{
		{"RSA and EC public keys", jwksJSON(t, rsaJWK("rsa-1", &rsaKey.PublicKey), ecJWK(t, "ec-1", &ecKey.PublicKey)), true},
		{"a private RSA key", jwksJSON(t, priv), false},
		{"a symmetric key", jwksJSON(t, map[string]any{"kty": "oct", "kid": "h", "k": b64([]byte("secret"))}), false},
		{"a key for HS256", jwksJSON(t, hs), false},
		{"no keys", []byte(`{"keys":[]}`), false},
		{"not JSON", []byte(`keys`), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := KeysFromJSON(tt.raw)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// A JWKS URL is fetched at start, and again when a token names a kid it
// does not know (a key the provider added since), at most once a minute.
func TestKeysFromURLRefreshesForAnUnknownKid(t *testing.T) {
	testKeys(t)
	var (
		fetches atomic.Int32
		mu      sync.Mutex
		set     = jwksJSON(t, rsaJWK("rsa-1", &rsaKey.PublicKey))
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys, err := KeysFromURL(ctx, srv.URL, time.Hour, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(VerifierConfig{Keys: keys, Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	claims := goodClaims("u1", ScopeRead)
	claims["exp"] = time.Now().Add(time.Hour).Unix()
	claims["iat"] = time.Now().Unix()
	if _, err := v.Verify(ctx, sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", claims)); err != nil {
		t.Fatalf("a token of the first key: %v", err)
	}
	mu.Lock()
	set = jwksJSON(t, rsaJWK("rsa-1", &rsaKey.PublicKey), ecJWK(t, "ec-1", &ecKey.PublicKey))
	mu.Unlock()
	before := fetches.Load()
	if _, err := v.Verify(ctx, sign(t, jwt.SigningMethodES256, ecKey, "ec-1", claims)); err != nil {
		t.Fatalf("a token of a key added later: %v", err)
	}
	if fetches.Load() != before+1 {
		t.Fatalf("%d fetches for the unknown kid, want 1", fetches.Load()-before)
	}
	// Another unknown kid within the minute fails at once, without a fetch.
	start := time.Now()
	if _, err := v.Verify(ctx, sign(t, jwt.SigningMethodES256, ecKey, "ec-2", claims)); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("unknown kid: %v", err)
	}
	if fetches.Load() != before+1 || time.Since(start) > 5*time.Second {
		t.Fatalf("%d fetches, %v: an unknown kid must not refetch within the minute", fetches.Load()-before, time.Since(start))
	}
}

func TestKeysFromURLFailsWhenTheFirstFetchFails(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, err := KeysFromURL(context.Background(), srv.URL, time.Hour, testLogger(t)); err == nil {
		t.Fatal("want an error for a JWKS URL that answers 404")
	}
}
