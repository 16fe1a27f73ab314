// Package auth authenticates and authorizes requests to command-svc and
// query-svc, the two services that serve the API.
//
//   - Callers present a bearer JWT (RFC 6750), signed with RS256 or ES256 by
//     an identity provider whose public keys come from a JWKS file or URL
//     (Verifier). Its `scope` (or `scp`) claim grants ScopeRead, ScopeWrite
//     or ScopeAdmin; RuleFor says which scope each route needs.
//   - Instances sign the requests they send each other (a forward to the
//     owner of a partition, the internal endpoints, the read-your-writes
//     waits) with HMAC-SHA256 under the shared INTERNAL_SECRET (Signer). A
//     request that carries X-Profiles-* headers, or asks for /internal/,
//     without a valid signature, or with the nonce of a signed request the
//     instance already accepted (a replay), is refused with 403. A forward
//     keeps the caller's Authorization header, and the owner verifies it
//     again.
//   - Authenticator.Middleware does both on every request, and puts the
//     Principal in the request's context for the handlers (FromContext).
//
// With Mode off (AUTH_MODE=off, for development) no token is checked: every
// request runs as Dev, which may do anything. Signatures are still checked
// when INTERNAL_SECRET is set.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The scopes a token may grant, in its space-separated `scope` claim (or
// its `scp` claim, a list).
const (
	// ScopeRead allows every GET: a profile, its history, search, the
	// change stream.
	ScopeRead = "profiles:read"
	// ScopeWrite allows POST (a profile whose uid is the token's sub) and
	// PUT and DELETE of the caller's own profile.
	ScopeWrite = "profiles:write"
	// ScopeAdmin allows everything: any profile, and /admin/ and /debug/.
	ScopeAdmin = "profiles:admin"
)

// Errors of authentication and authorization. Check them with errors.Is.
var (
	// ErrNoToken: the request has no bearer token.
	ErrNoToken = errors.New("no bearer token")
	// ErrInvalidToken: the bearer token is malformed, not signed by a known
	// key with an allowed algorithm, expired, not yet valid, or for another
	// audience or issuer. Verify wraps the precise jwt error too.
	ErrInvalidToken = errors.New("invalid token")
	// ErrInsufficientScope: the token is valid but does not grant the scope
	// the request needs.
	ErrInsufficientScope = errors.New("insufficient scope")
	// ErrBadSignature: a request claims to come from another instance
	// (X-Profiles-* headers, /internal/) without a valid signature.
	ErrBadSignature = errors.New("invalid request signature")
	// ErrReplayed: a validly signed request whose nonce the instance has
	// accepted already: a replay (see Signer). It wraps ErrBadSignature,
	// and is answered the same way.
	ErrReplayed = fmt.Errorf("%w: the request was received already (a replay)", ErrBadSignature)
	// ErrReplayCacheFull: a validly signed request that the instance
	// cannot take now, because it remembers MaxNonces nonces already
	// (see Signer). Not a bad signature: it is answered 503, to be sent
	// again later.
	ErrReplayCacheFull = errors.New("too many signed requests in the last seconds to remember another")
)

// Kind says how a Principal was authenticated.
type Kind string

// Kinds of Principal.
const (
	// KindToken: a verified bearer JWT.
	KindToken Kind = "token"
	// KindPeer: another instance, by a valid request signature, without a
	// caller's token (the internal endpoints, read-your-writes waits).
	KindPeer Kind = "peer"
	// KindDev: AUTH_MODE=off; nobody was authenticated.
	KindDev Kind = "dev"
)

// Principal is who a request runs as.
type Principal struct {
	Kind Kind
	// Subject is the token's `sub`; "peer" or "dev" for the other kinds.
	Subject string
	// Scopes the principal holds.
	Scopes []string
	// Expires is when the token expires (zero for other kinds).
	Expires time.Time
}

// Peer is the Principal of a signed request from another instance that
// carries no caller token: it may read, and nothing more. (The internal
// endpoints need the signature, not a scope.)
var Peer = Principal{Kind: KindPeer, Subject: "peer", Scopes: []string{ScopeRead}}

// Dev is the Principal of every request under AUTH_MODE=off: it may do
// anything.
var Dev = Principal{Kind: KindDev, Subject: "dev", Scopes: []string{ScopeAdmin}}

// Has reports whether p holds scope. ScopeAdmin implies every scope, and
// the empty scope is held by everyone.
func (p Principal) Has(scope string) bool {
	return scope == "" || slices.Contains(p.Scopes, scope) || slices.Contains(p.Scopes, ScopeAdmin)
}

// Admin reports whether p holds ScopeAdmin: it may act on any profile.
func (p Principal) Admin() bool { return p.Has(ScopeAdmin) }

type principalKey struct{}
type peerKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the Principal the middleware authenticated, if any.
// A request with no token (and no peer signature) has none.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// FromPeer reports whether the request came from another instance: it
// carried a valid signature (or, without INTERNAL_SECRET, X-Profiles-*
// headers, which are then trusted as before authentication existed).
func FromPeer(ctx context.Context) bool {
	v, _ := ctx.Value(peerKey{}).(bool)
	return v
}

func withPeer(ctx context.Context, peer bool) context.Context {
	return context.WithValue(ctx, peerKey{}, peer)
}

// Rule is what a request needs to be served.
type Rule struct {
	// Public: nothing (health, readiness, metrics, the routing table). No
	// token is looked at.
	Public bool
	// Peer: a valid signature of another instance (the internal
	// endpoints). Without INTERNAL_SECRET (only under AUTH_MODE=off),
	// anything goes, as before authentication existed.
	Peer bool
	// Scope the caller's Principal must hold.
	Scope string
}

// RuleFor returns the rule of a request, by method and path. It is the one
// table of who may do what:
//
//	/healthz, /readyz, /metrics       public
//	GET /routing                      public (routing.TablePath)
//	/internal/...                     a peer's signature
//	/admin/..., /debug/...            profiles:admin
//	GET, HEAD /api/...                profiles:read
//	POST, PUT, DELETE, ... /api/...   profiles:write (command-svc checks the owner)
//	anything else                     profiles:admin
func RuleFor(method, path string) Rule {
	switch {
	case path == "/healthz" || path == "/readyz" || path == "/metrics":
		return Rule{Public: true}
	case path == "/routing" && (method == "GET" || method == "HEAD"):
		// The routing table (routing.TablePath), which the front door
		// reads without a token: instance ids, URLs and partitions.
		return Rule{Public: true}
	case strings.HasPrefix(path, "/internal/"):
		return Rule{Peer: true}
	case strings.HasPrefix(path, "/api/"):
		if method == "GET" || method == "HEAD" {
			return Rule{Scope: ScopeRead}
		}
		return Rule{Scope: ScopeWrite}
	default:
		return Rule{Scope: ScopeAdmin}
	}
}
