package service

import (
	"context"
	"flag"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"profiles/platform/auth"
	"profiles/platform/config"
	"profiles/platform/httpx"
)

// Default rate limit of a client (a token's sub, or an IP address without
// a token) on one instance.
const (
	DefaultRateLimitRPS   = 50
	DefaultRateLimitBurst = 100
)

// DevWarningEvery is how often a service under AUTH_MODE=off repeats that
// it authenticates nobody.
const DevWarningEvery = 5 * time.Minute

// APIFlags are the security settings of the services that serve the API
// (command-svc, query-svc): authentication (see platform/auth) and rate
// limits.
type APIFlags struct {
	Auth      *auth.Flags
	RateRPS   *float64
	RateBurst *int
}

// RegisterAPIFlags registers the security settings on fs.
func RegisterAPIFlags(fs *flag.FlagSet) *APIFlags {
	return &APIFlags{
		Auth:      auth.RegisterFlags(fs),
		RateRPS:   config.Float(fs, "rate-limit-rps", "RATE_LIMIT_RPS", DefaultRateLimitRPS, "requests per second a client (a token's sub, else an IP address) may send to this instance; 0: no limit"),
		RateBurst: config.Int(fs, "rate-limit-burst", "RATE_LIMIT_BURST", DefaultRateLimitBurst, "requests a client may send at once above RATE_LIMIT_RPS"),
	}
}

// Security is the authentication and rate limiting of an API service.
type Security struct {
	Auth    *auth.Authenticator
	Limiter *httpx.RateLimiter // nil: no limit
}

// Security builds the service's Security, or says which setting is
// missing: with AUTH_MODE=jwt (the default) the service must not start
// without its keys, audience and INTERNAL_SECRET. ctx ends the reloads of
// the JWKS (file or URL).
func (f *APIFlags) Security(ctx context.Context, log *slog.Logger) (*Security, error) {
	a, err := f.Auth.Authenticator(ctx, log)
	if err != nil {
		return nil, err
	}
	if a.Mode == auth.ModeOff && a.Signer == nil {
		log.Warn("AUTH_MODE=off without INTERNAL_SECRET: X-Profiles-* headers and /internal/ are trusted from anyone who reaches this port")
	}
	return &Security{Auth: a, Limiter: httpx.NewRateLimiter(*f.RateRPS, *f.RateBurst)}, nil
}

// Install adds authentication (auth.Authenticator.Middleware) and then the
// rate limit (per auth.RateKey) to r, after NewRouter's logging and
// metrics, so that refusals are logged and counted too.
func (s *Security) Install(r *mux.Router) {
	r.Use(s.Auth.Middleware, mux.MiddlewareFunc(s.Limiter.Middleware(auth.RateKey)))
}

// Sign signs r, a request to another instance whose body is body (see
// auth.Signer); without INTERNAL_SECRET it does nothing.
func (s *Security) Sign(r *http.Request, body []byte) { s.Auth.Signer.Sign(r, body) }

// Task repeats, under AUTH_MODE=off, the warning that nobody is
// authenticated (a Task for Run); otherwise it just waits for ctx.
func (s *Security) Task(ctx context.Context) error { return s.Auth.WarnDev(ctx, DevWarningEvery) }
