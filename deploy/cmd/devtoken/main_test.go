package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"profiles/deploy/internal/devkey"
	"profiles/platform/auth"
)

// verifier verifies tokens the way the services do, with the JWKS that
// init wrote and its audience and issuer.
func verifier(t *testing.T, s Settings, now time.Time) *auth.Verifier {
	t.Helper()
	raw, err := os.ReadFile(s.JWKSFile)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.KeysFromJSON(raw) // refuses private key material
	if err != nil {
		t.Fatalf("the services refuse the JWKS: %v", err)
	}
	v, err := auth.NewVerifier(auth.VerifierConfig{Keys: keys, Audience: s.Audience, Issuer: s.Issuer, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A token of devtoken passes the services' verifier, with its subject and
// scopes; init keeps the key, so tokens stay valid across runs.
func TestTokensPassTheServicesVerifierAndTheKeyIsKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev-auth")
	s, err := Init(dir, "aud-x", "iss-y")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, devkey.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing key: %v, %v; want mode 600", fi, err)
	}
	now := time.Now()
	tok, err := Token(dir, "7d8b0c5e-8a6f-4c1e-9a55-2f0f4a3b1c2d", "profiles:read  profiles:write", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	p, err := verifier(t, s, now).Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if p.Subject != "7d8b0c5e-8a6f-4c1e-9a55-2f0f4a3b1c2d" || !p.Has(auth.ScopeRead) || !p.Has(auth.ScopeWrite) || p.Admin() {
		t.Fatalf("principal %+v", p)
	}
	// Expired after its ttl (and the leeway).
	if _, err := verifier(t, s, now.Add(time.Hour+time.Minute)).Verify(context.Background(), tok); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("after the ttl: %v, want expired", err)
	}

	// A second init, with another audience, keeps the key: the old token's
	// signature still verifies, and the JWKS is the same.
	jwks1, _ := os.ReadFile(s.JWKSFile)
	s2, err := Init(dir, "aud-z", "")
	if err != nil {
		t.Fatal(err)
	}
	if jwks2, _ := os.ReadFile(s2.JWKSFile); !bytes.Equal(jwks1, jwks2) || s2.KeyID != s.KeyID {
		t.Fatal("a second init made a new key")
	}
	if _, err := verifier(t, s2, now).Verify(context.Background(), tok); !errors.Is(err, jwt.ErrTokenInvalidAudience) {
		t.Fatalf("old token, new audience: %v, want invalid audience", err)
	}
	tok2, err := Token(dir, "someone", "profiles:admin", time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := verifier(t, s2, now).Verify(context.Background(), tok2); err != nil || !p.Admin() {
		t.Fatalf("token after the second init: %+v, %v", p, err)
	}

	// Another key pair's verifier refuses the token.
	other, err := Init(filepath.Join(t.TempDir(), "other"), "aud-z", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifier(t, other, now).Verify(context.Background(), tok2); err == nil {
		t.Fatal("a token of one key verified with another")
	}
}

func TestTokenRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	if _, err := Token(dir, "x", "", time.Hour, time.Now()); err == nil || !strings.Contains(err.Error(), "make run AUTH_MODE=jwt") {
		t.Fatalf("before init: %v", err)
	}
	if _, err := Init(dir, "a", "i"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ sub, scopes string }{{"", "profiles:read"}, {"x", "profiles:reed"}} {
		if _, err := Token(dir, tt.sub, tt.scopes, time.Hour, time.Now()); err == nil {
			t.Errorf("sub %q scopes %q: no error", tt.sub, tt.scopes)
		}
	}
	if _, err := Token(dir, "x", "", 0, time.Now()); err == nil {
		t.Error("ttl 0: no error")
	}
}

// The command line: init prints the settings, token prints one token and
// nothing else on stdout, help and mistakes answer with the usage.
func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := run([]string{"init", "-dir", dir, "-audience", "a1", "-issuer", "i1"}, &out, &errOut); code != 0 {
		t.Fatalf("init: %d %s", code, errOut.String())
	}
	want := "AUTH_JWKS_FILE=" + filepath.Join(dir, "jwks.json") + "\nAUTH_AUDIENCE=a1\nAUTH_ISSUER=i1\n"
	if out.String() != want {
		t.Fatalf("init printed %q, want %q", out.String(), want)
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"token", "-dir", dir}, &out, &errOut); code != 0 {
		t.Fatalf("token: %d %s", code, errOut.String())
	}
	if tok := strings.TrimSpace(out.String()); strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
		t.Fatalf("token printed %q", out.String())
	}
	if !strings.Contains(errOut.String(), "a new uid") {
		t.Fatalf("token without -sub: stderr %q", errOut.String())
	}
	for _, tt := range []struct {
		args []string
		code int
	}{{nil, 2}, {[]string{"--help"}, 0}, {[]string{"mint"}, 2}, {[]string{"token", "extra"}, 2}, {[]string{"token", "-h"}, 0}} {
		if code := run(tt.args, &out, &errOut); code != tt.code {
			t.Errorf("%q: status %d, want %d", tt.args, code, tt.code)
		}
	}
}
