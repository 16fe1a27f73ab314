package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"golang.org/x/time/rate"
)

// DefaultJWKSRefresh is how often KeysFromURL fetches the key set again.
const DefaultJWKSRefresh = 5 * time.Minute

// KeysFromFile reads a JWKS (RFC 7517, {"keys":[...]}) of public RSA and EC
// keys from path, once: rotating keys means restarting, or serving the
// set at a URL (KeysFromURL). See KeysFromJSON for what is refused.
func KeysFromFile(path string) (keyfunc.Keyfunc, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the JWKS file: %w", err)
	}
	k, err := KeysFromJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("JWKS file %s: %w", path, err)
	}
	return k, nil
}

// KeysFromJSON parses a JWKS of public keys. It refuses a set with no key,
// a key that is neither RSA nor EC (kty), a key for an algorithm other than
// RS256 or ES256, and any private or symmetric key material: the private
// keys stay with the identity provider, never on the service.
func KeysFromJSON(raw []byte) (keyfunc.Keyfunc, error) {
	if err := checkPublicJWKS(raw); err != nil {
		return nil, err
	}
	k, err := keyfunc.NewJWKSetJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("parse the JWKS: %w", err)
	}
	return k, nil
}

// privateMembers are the JWK members of private or symmetric key material
// (RFC 7518, section 6).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

func checkPublicJWKS(raw []byte) error {
	var set struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		return fmt.Errorf("not a JWKS: %w", err)
	}
	if len(set.Keys) == 0 {
		return errors.New(`the JWKS has no keys (want {"keys":[...]})`)
	}
	for i, key := range set.Keys {
		var kty, alg string
		_ = json.Unmarshal(key["kty"], &kty)
		_ = json.Unmarshal(key["alg"], &alg)
		if kty != "RSA" && kty != "EC" {
			return fmt.Errorf("key %d: kty %q; only RSA and EC public keys are allowed", i, kty)
		}
		if alg != "" && !slices.Contains(Algorithms, alg) {
			return fmt.Errorf("key %d: alg %q; only %v are allowed", i, alg, Algorithms)
		}
		for _, m := range privateMembers {
			if _, ok := key[m]; ok {
				return fmt.Errorf("key %d holds private key material (%q): give the service the public keys only", i, m)
			}
		}
	}
	return nil
}

// KeysFromURL fetches the JWKS at url now (failing if it cannot), then
// again every refresh (0 means DefaultJWKSRefresh) until ctx ends, and at
// most once a minute for a token whose kid it does not know (a key the
// provider just added). Refresh failures are logged and keep the last set.
func KeysFromURL(ctx context.Context, url string, refresh time.Duration, log *slog.Logger) (keyfunc.Keyfunc, error) {
	if refresh <= 0 {
		refresh = DefaultJWKSRefresh
	}
	failFirst := false
	k, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{url}, keyfunc.Override{
		Client:                    &http.Client{Timeout: 10 * time.Second},
		HTTPTimeout:               10 * time.Second,
		NoErrorReturnFirstHTTPReq: &failFirst,
		RefreshInterval:           refresh,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(time.Minute), 1),
		// A request with an unknown kid never waits for the limiter: it
		// fails at once when a refresh was done within the minute.
		RateLimitWaitMax: time.Second,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				log.Error("refreshing the JWKS failed; keeping the keys already known", "url", u, "err", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("fetch the JWKS from %s: %w", url, err)
	}
	return k, nil
}
