package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"profiles/platform/httpx"
	"profiles/platform/internal/loop"
)

// Mode is AUTH_MODE.
type Mode string

// Modes of authentication.
const (
	// ModeJWT (the default) requires a valid bearer token on every API
	// request, and a signature on every request between instances.
	ModeJWT Mode = "jwt"
	// ModeOff checks no token: every request runs as Dev. For development
	// only; the service says so in its log at start and every few minutes.
	ModeOff Mode = "off"
)

// Realm is the realm of the WWW-Authenticate challenges.
const Realm = "profiles"

// Authenticator authenticates every request of a service and enforces
// RuleFor. Use Middleware on the router.
type Authenticator struct {
	Mode Mode
	// Verifier checks bearer tokens; required with ModeJWT.
	Verifier *Verifier
	// Signer checks the signatures of requests from other instances. Nil
	// (allowed with ModeOff only) trusts X-Profiles-* headers and
	// /internal/ as before authentication existed.
	Signer *Signer
	Log    *slog.Logger
}

// Check returns an error unless a is a consistent configuration.
func (a *Authenticator) Check() error {
	switch a.Mode {
	case ModeJWT:
		if a.Verifier == nil {
			return errors.New("AUTH_MODE=jwt needs a verifier (AUTH_JWKS_FILE or AUTH_JWKS_URL, and AUTH_AUDIENCE)")
		}
		if a.Signer == nil {
			return errors.New("AUTH_MODE=jwt needs INTERNAL_SECRET, the secret the instances sign their requests to each other with")
		}
	case ModeOff:
	default:
		return fmt.Errorf("AUTH_MODE must be jwt or off, not %q", a.Mode)
	}
	return nil
}

// Middleware authenticates a request, then serves it if RuleFor allows:
//
//  1. A request that carries an X-Profiles-* header, or asks for
//     /internal/, must carry a valid signature of another instance (when
//     there is a Signer), and one not seen before: otherwise 403
//     `invalid-signature`, also for a replay of a request already served
//     (ErrReplayed). When the Signer's replay cache is full, 503
//     `replay-cache-full` with Retry-After (ErrReplayCacheFull).
//  2. Its Principal: Dev under ModeOff; otherwise the bearer token's
//     (an invalid token is 401 `invalid_token`, whatever the route), or
//     Peer for a signed request without a token, or none.
//  3. The rule: a public route needs nothing; /internal/ needs the
//     signature of step 1; any other needs a Principal (401 without one)
//     that holds the route's scope (403 `insufficient_scope`).
//
// The Principal goes into the request's context (FromContext). Whether a
// profile is the caller's own is for the handler that knows the uid.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rule := RuleFor(r.Method, r.URL.Path)
		if rule.Public {
			next.ServeHTTP(w, r)
			return
		}
		peer := false
		if rule.Peer || HasInternalHeaders(r.Header) {
			if a.Signer != nil {
				if err := a.Signer.Verify(r); errors.Is(err, ErrReplayCacheFull) {
					a.logger().Warn("refused a signed request: the replay cache is full", "method", r.Method,
						"route", httpx.Route(r), "remote", r.RemoteAddr, "max", MaxNonces)
					w.Header().Set("Retry-After", "1")
					httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "replay-cache-full", "Service Unavailable",
						"this instance has taken too many signed requests in the last seconds; try again"))
					return
				} else if err != nil {
					a.logger().Warn("refused a request that claims to come from another instance", "method", r.Method,
						"route", httpx.Route(r), "remote", r.RemoteAddr, "err", err)
					httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusForbidden, "invalid-signature", "Forbidden",
						"X-Profiles-* headers and /internal/ are for the instances of the service, and need their signature"))
					return
				}
			}
			peer = true
		}
		ctx := withPeer(r.Context(), peer)
		p, ok, err := a.principal(ctx, r, peer)
		if err != nil {
			Unauthorized(w, r, err)
			return
		}
		if ok {
			ctx = WithPrincipal(ctx, p)
		}
		switch {
		case rule.Peer:
			// The signature was checked above.
		case !ok:
			Unauthorized(w, r, ErrNoToken)
			return
		case !p.Has(rule.Scope):
			InsufficientScope(w, r, rule.Scope)
			return
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// principal returns who the request runs as, if anyone, or the error of
// an invalid token.
func (a *Authenticator) principal(ctx context.Context, r *http.Request, peer bool) (Principal, bool, error) {
	if a.Mode == ModeOff {
		return Dev, true, nil
	}
	token, present, err := bearer(r)
	switch {
	case err != nil:
		return Principal{}, false, err
	case present:
		p, err := a.Verifier.Verify(ctx, token)
		if err != nil {
			return Principal{}, false, err
		}
		return p, true, nil
	case peer:
		return Peer, true, nil
	default:
		return Principal{}, false, nil
	}
}

// bearer returns the token of an `Authorization: Bearer <token>` header.
// Another scheme counts as no token; several Authorization headers, or a
// Bearer one without a token, are an invalid token.
func bearer(r *http.Request) (string, bool, error) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return "", false, nil
	}
	if len(values) > 1 {
		return "", false, fmt.Errorf("%w: more than one Authorization header", ErrInvalidToken)
	}
	scheme, token, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", false, nil
	}
	if token = strings.TrimSpace(token); token == "" {
		return "", false, fmt.Errorf("%w: an empty bearer token", ErrInvalidToken)
	}
	return token, true, nil
}

func (a *Authenticator) logger() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}

// Unauthorized answers 401 with the RFC 6750 challenge: with no token, a
// bare `Bearer realm="profiles"`; with a bad one, error="invalid_token"
// and a short description of why.
func Unauthorized(w http.ResponseWriter, r *http.Request, err error) {
	challenge := `Bearer realm="` + Realm + `"`
	detail := "this request needs a bearer token (Authorization: Bearer <JWT>)"
	if !errors.Is(err, ErrNoToken) {
		challenge += `, error="invalid_token", error_description="` + describe(err) + `"`
		detail = describe(err)
	}
	w.Header().Set("WWW-Authenticate", challenge)
	httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusUnauthorized, "unauthorized", "Unauthorized", detail))
}

// InsufficientScope answers 403 for a valid token without scope (RFC 6750
// error="insufficient_scope").
func InsufficientScope(w http.ResponseWriter, r *http.Request, scope string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="`+Realm+`", error="insufficient_scope", scope="`+scope+`"`)
	httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusForbidden, "insufficient-scope", "Forbidden",
		"this request needs the scope "+scope))
}

// NotOwner answers 403 for a caller that may not act on the profile: it is
// not the caller's own (its uid is not the token's sub), and the caller is
// no admin.
func NotOwner(w http.ResponseWriter, r *http.Request, detail string) {
	httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusForbidden, "not-owner", "Forbidden", detail))
}

// RateKey returns the key a request counts against in a rate limit, after
// Middleware: "sub:<sub>" for a caller with a verified token, else
// "ip:<client address>". Requests from other instances (counted where
// they entered) and public routes are not limited (ok false).
func RateKey(r *http.Request) (key string, ok bool) {
	if RuleFor(r.Method, r.URL.Path).Public || FromPeer(r.Context()) {
		return "", false
	}
	if p, found := FromContext(r.Context()); found && p.Kind == KindToken {
		return "sub:" + p.Subject, true
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip:" + host, true
}

// WarnDev logs, under ModeOff, that nothing is authenticated: now, and
// every interval until ctx ends. It returns when ctx ends (a service.Task).
func (a *Authenticator) WarnDev(ctx context.Context, interval time.Duration) error {
	if a.Mode != ModeOff {
		<-ctx.Done()
		return nil
	}
	warn := func() {
		a.logger().Warn("AUTH_MODE=off: NO AUTHENTICATION. Every request may read, change and delete any profile. " +
			"For development only; production needs AUTH_MODE=jwt")
	}
	warn()
	loop.Every(ctx, interval, warn)
	return nil
}
