package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"profiles/platform/clock"
)

// Algorithms are the only signing algorithms a token may use. Every other
// one is refused before any key is looked up: "none", and the HMAC ones
// (HS256 signed with a public key as the secret is the classic attack).
var Algorithms = []string{"RS256", "ES256"}

// DefaultLeeway is the clock skew allowed on exp and nbf.
const DefaultLeeway = 30 * time.Second

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Keys finds the public key of a token's kid: KeysFromFile,
	// KeysFromURL or KeysFromJSON.
	Keys keyfunc.Keyfunc
	// Audience must be one of the token's `aud` values. Required.
	Audience string
	// Issuer, if set, must be the token's `iss`.
	Issuer string
	// Leeway is the clock skew allowed on exp and nbf; 0 means
	// DefaultLeeway.
	Leeway time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Verifier verifies bearer JWTs. It is safe for concurrent use.
type Verifier struct {
	parser *jwt.Parser
	keys   keyfunc.Keyfunc
}

// NewVerifier returns a Verifier of tokens that:
//   - are signed with RS256 or ES256 (Algorithms) by a key of cfg.Keys,
//     found by the token's kid (or, without a kid, any key that verifies);
//   - have an exp in the future and an nbf (if any) in the past, give or
//     take the leeway;
//   - name cfg.Audience in `aud`, and cfg.Issuer (if set) in `iss`;
//   - have a `sub`.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Keys == nil {
		return nil, errors.New("auth: a verifier needs keys")
	}
	if cfg.Audience == "" {
		return nil, errors.New("auth: a verifier needs an audience")
	}
	leeway := cfg.Leeway
	if leeway <= 0 {
		leeway = DefaultLeeway
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(Algorithms),
		jwt.WithLeeway(leeway),
		jwt.WithExpirationRequired(),
		jwt.WithAudience(cfg.Audience),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	now := cfg.Now
	if now == nil {
		now = clock.Now // the wall clock (see package clock)
	}
	opts = append(opts, jwt.WithTimeFunc(now))
	return &Verifier{parser: jwt.NewParser(opts...), keys: cfg.Keys}, nil
}

// claims are the claims a Verifier reads.
type claims struct {
	jwt.RegisteredClaims
	Scope scopeList `json:"scope,omitempty"`
	Scp   scopeList `json:"scp,omitempty"`
}

// scopeList reads a scope claim written either as one space-separated
// string (RFC 8693 `scope`) or as a list of strings (`scp`, as some
// providers write it).
type scopeList []string

func (s *scopeList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = strings.Fields(one)
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("a scope claim must be a string or a list of strings: %w", err)
	}
	*s = nil
	for _, item := range list {
		*s = append(*s, strings.Fields(item)...)
	}
	return nil
}

// Verify checks a token (without "Bearer ") and returns its Principal.
// Every failure wraps ErrInvalidToken and, where there is one, the jwt
// package's error (jwt.ErrTokenExpired, jwt.ErrTokenInvalidAudience, ...).
// ctx bounds a JWKS refresh for an unknown kid.
func (v *Verifier) Verify(ctx context.Context, raw string) (Principal, error) {
	var c claims
	if _, err := v.parser.ParseWithClaims(raw, &c, v.keys.KeyfuncCtx(ctx)); err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if c.Subject == "" {
		return Principal{}, fmt.Errorf("%w: %w: sub", ErrInvalidToken, jwt.ErrTokenRequiredClaimMissing)
	}
	p := Principal{Kind: KindToken, Subject: c.Subject}
	for _, s := range append(c.Scope, c.Scp...) {
		if !slices.Contains(p.Scopes, s) {
			p.Scopes = append(p.Scopes, s)
		}
	}
	if c.ExpiresAt != nil {
		p.Expires = c.ExpiresAt.Time
	}
	return p, nil
}

// describe says in a few words why a token was refused, for the
// error_description of WWW-Authenticate. It names no key and no claim
// value.
func describe(err error) string {
	switch {
	case errors.Is(err, ErrNoToken):
		return "no bearer token"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "the token is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "the token is for another audience"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "the token is from another issuer"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "the token lacks a required claim"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "the token is malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "the token's signature cannot be verified with an allowed algorithm and a known key"
	default:
		return "the token is invalid"
	}
}
