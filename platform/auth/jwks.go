package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"profiles/platform/internal/loop"
)

// DefaultJWKSRefresh is how often a JWKS, from a file (KeysFromFile) or a
// URL (KeysFromURL), is loaded again (AUTH_JWKS_REFRESH).
const DefaultJWKSRefresh = 5 * time.Minute

// unknownKIDRefresh is how often, at most, a token whose kid is not in the
// key set makes a JWKS file or URL load again: a key the identity provider
// just added is picked up at its first token, and tokens with made-up kids
// cannot make the service read or fetch more often than this.
const unknownKIDRefresh = time.Minute

// FileKeys is the key set of a JWKS file (AUTH_JWKS_FILE) that reloads
// itself while the service runs, as KeysFromURL does for a URL: every
// refresh interval (AUTH_JWKS_REFRESH), and at most once a minute when a
// token names a kid the set does not hold. Make one with KeysFromFile; it
// implements keyfunc.Keyfunc, for VerifierConfig.Keys.
//
// The contract:
//   - Concurrency: it is safe for concurrent use. A reload builds a whole
//     new set and swaps it in atomically, so a token is verified against
//     either the old set or the new one, never a mix. Reloads (the
//     periodic one and those for unknown kids) run one at a time.
//   - A bad file keeps the keys: when the file cannot be read, is not a
//     JWKS, or is one that KeysFromJSON refuses (no keys, private or
//     symmetric key material, another kty or alg), the keys already
//     loaded stay in use and a WARN is logged, at each attempt, until the
//     file is good again. Nothing panics or stops the service. So a key
//     is revoked by writing a file without it (with at least one other
//     key), not by emptying the file. Write the file atomically (a new
//     file renamed over the old one): a half-written file is only refused
//     and read again at the next attempt, but keeps the old keys meanwhile.
//   - A change is logged at INFO with the key ids (kid) now in the set,
//     and those added and removed; never any key material. A file that
//     did not change (byte for byte) is not parsed again, and logs nothing.
type FileKeys struct {
	path       string
	log        *slog.Logger
	unknownKID *rate.Limiter

	cur atomic.Pointer[fileKeySet]
	// mu serialises reloads, and guards failing.
	mu      sync.Mutex
	failing bool // the last attempt failed (for the INFO when it recovers)
	done    chan struct{}
}

// fileKeySet is one version of a JWKS file, parsed.
type fileKeySet struct {
	keys keyfunc.Keyfunc
	sum  [sha256.Size]byte
	kids []string // sorted; "" for a key without kid
}

// KeysFromFile reads a JWKS (RFC 7517, {"keys":[...]}) of public RSA and EC
// keys from path now, failing if it cannot (the service does not start),
// then reloads it every refresh (0 means DefaultJWKSRefresh) until ctx
// ends, and at most once a minute for a token with an unknown kid. See
// FileKeys for what a reload does with a bad file, and KeysFromJSON for
// what is refused. log gets the reloads' WARNs and INFOs (nil:
// slog.Default()).
func KeysFromFile(ctx context.Context, path string, refresh time.Duration, log *slog.Logger) (*FileKeys, error) {
	if refresh <= 0 {
		refresh = DefaultJWKSRefresh
	}
	if log == nil {
		log = slog.Default()
	}
	k := &FileKeys{path: path, log: log, unknownKID: rate.NewLimiter(rate.Every(unknownKIDRefresh), 1), done: make(chan struct{})}
	set, err := k.read()
	if err != nil {
		return nil, err
	}
	k.cur.Store(set)
	go k.run(ctx, refresh)
	return k, nil
}

// run reloads the file every refresh until ctx ends.
func (k *FileKeys) run(ctx context.Context, refresh time.Duration) {
	defer close(k.done)
	loop.Every(ctx, refresh, func() { _, _ = k.Reload() })
}

// read reads and parses the file; it does not touch the current set.
func (k *FileKeys) read() (*fileKeySet, error) {
	raw, err := os.ReadFile(k.path)
	if err != nil {
		return nil, fmt.Errorf("read the JWKS file: %w", err)
	}
	return k.parse(raw)
}

func (k *FileKeys) parse(raw []byte) (*fileKeySet, error) {
	kids, err := checkPublicJWKS(raw)
	if err != nil {
		return nil, fmt.Errorf("JWKS file %s: %w", k.path, err)
	}
	keys, err := keyfunc.NewJWKSetJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("JWKS file %s: parse the JWKS: %w", k.path, err)
	}
	slices.Sort(kids)
	return &fileKeySet{keys: keys, sum: sha256.Sum256(raw), kids: kids}, nil
}

// Reload reads the file again now, and swaps in its keys if it changed and
// is good. It reports whether the key set changed; on a bad file it logs a
// WARN, keeps the keys in use and returns the error. The periodic reload
// calls it; so may an operator's hook (a signal, say).
func (k *FileKeys) Reload() (changed bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	old := k.cur.Load()
	raw, err := os.ReadFile(k.path)
	if err == nil && sha256.Sum256(raw) == old.sum {
		if k.failing {
			k.failing = false
			k.log.Info("the JWKS file is good again; its keys did not change", "file", k.path, "kids", old.kids)
		}
		return false, nil
	}
	var set *fileKeySet
	if err != nil {
		err = fmt.Errorf("read the JWKS file: %w", err)
	} else {
		set, err = k.parse(raw)
	}
	if err != nil {
		k.failing = true
		k.log.Warn("reloading the JWKS file failed; keeping the keys already loaded", "file", k.path, "kids", old.kids, "err", err)
		return false, err
	}
	k.failing = false
	k.cur.Store(set)
	added, removed := diffKIDs(old.kids, set.kids)
	k.log.Info("the JWKS file changed; verifying tokens with its new keys", "file", k.path, "kids", set.kids, "added", added, "removed", removed)
	return true, nil
}

// diffKIDs returns the kids of now that were not in before, and those of
// before that are not in now.
func diffKIDs(before, now []string) (added, removed []string) {
	for _, kid := range now {
		if !slices.Contains(before, kid) {
			added = append(added, kid)
		}
	}
	for _, kid := range before {
		if !slices.Contains(now, kid) {
			removed = append(removed, kid)
		}
	}
	return added, removed
}

// KIDs returns the key ids of the set in use, sorted ("" for a key without
// kid).
func (k *FileKeys) KIDs() []string { return slices.Clone(k.cur.Load().kids) }

// KeyfuncCtx is the jwt.Keyfunc of the set in use. A token whose kid the
// set does not hold reloads the file first, at most once a minute.
func (k *FileKeys) KeyfuncCtx(ctx context.Context) jwt.Keyfunc {
	return func(token *jwt.Token) (any, error) {
		set := k.cur.Load()
		if kid, ok := token.Header["kid"].(string); ok && !slices.Contains(set.kids, kid) && k.unknownKID.Allow() {
			_, _ = k.Reload() // a failure is logged, and keeps the set
			set = k.cur.Load()
		}
		return set.keys.KeyfuncCtx(ctx)(token)
	}
}

// Keyfunc is KeyfuncCtx with a background context.
func (k *FileKeys) Keyfunc(token *jwt.Token) (any, error) {
	return k.KeyfuncCtx(context.Background())(token)
}

// Storage returns the storage of the set in use; a reload does not change
// what it returned before.
func (k *FileKeys) Storage() jwkset.Storage { return k.cur.Load().keys.Storage() }

// VerificationKeySet returns every key of the set in use.
func (k *FileKeys) VerificationKeySet(ctx context.Context) (jwt.VerificationKeySet, error) {
	return k.cur.Load().keys.VerificationKeySet(ctx)
}

// KeysFromJSON parses a JWKS of public keys. It refuses a set with no key,
// a key that is neither RSA nor EC (kty), a key for an algorithm other than
// RS256 or ES256, and any private or symmetric key material: the private
// keys stay with the identity provider, never on the service.
func KeysFromJSON(raw []byte) (keyfunc.Keyfunc, error) {
	if _, err := checkPublicJWKS(raw); err != nil {
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

// checkPublicJWKS returns the key ids of raw ("" for a key without kid),
// or why KeysFromJSON refuses it.
func checkPublicJWKS(raw []byte) (kids []string, err error) {
	var set struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New(`the JWKS has no keys (want {"keys":[...]})`)
	}
	for i, key := range set.Keys {
		var kty, alg, kid string
		_ = json.Unmarshal(key["kty"], &kty)
		_ = json.Unmarshal(key["alg"], &alg)
		_ = json.Unmarshal(key["kid"], &kid)
		if kty != "RSA" && kty != "EC" {
			return nil, fmt.Errorf("key %d: kty %q; only RSA and EC public keys are allowed", i, kty)
		}
		if alg != "" && !slices.Contains(Algorithms, alg) {
			return nil, fmt.Errorf("key %d: alg %q; only %v are allowed", i, alg, Algorithms)
		}
		for _, m := range privateMembers {
			if _, ok := key[m]; ok {
				return nil, fmt.Errorf("key %d holds private key material (%q): give the service the public keys only", i, m)
			}
		}
		kids = append(kids, kid)
	}
	return kids, nil
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
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(unknownKIDRefresh), 1),
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
