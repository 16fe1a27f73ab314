package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"profiles/platform/clock"
)

// Headers of a signed request between instances.
const (
	// HeaderTimestamp is when the request was signed, in Unix seconds.
	HeaderTimestamp = "X-Profiles-Timestamp"
	// HeaderSignature is "v1=" and the hex HMAC-SHA256 of the request's
	// canonical form (see Signer).
	HeaderSignature = "X-Profiles-Signature"
	// HeaderNonce is a value Sign draws at random for every request (16
	// bytes, base64url without padding). Like every X-Profiles-* header it
	// is signed; a verifier accepts each nonce once (see Signer).
	HeaderNonce = "X-Profiles-Nonce"
	// internalPrefix starts the names of every header the instances send
	// each other; clients must never send one.
	internalPrefix = "X-Profiles-"
)

// Limits of Signer.
const (
	// SignatureWindow is how far a signature's timestamp may be from the
	// verifier's clock, either way: a forward is signed again at every
	// attempt, so it only has to cover one hop and the clock skew.
	SignatureWindow = 30 * time.Second
	// MinSecretLen is the shortest INTERNAL_SECRET accepted, in bytes.
	MinSecretLen = 32
	// MaxSignedBody is the largest body Verify reads (the routing layer
	// forwards at most this much).
	MaxSignedBody = 1 << 20
	// NonceLen is the length of a nonce in bytes, before base64url.
	NonceLen = 16
	// MaxNonces is how many nonces a Signer remembers at most: those of
	// the requests it accepted whose timestamps are still within
	// SignatureWindow (about the last 31 seconds). It bounds the memory of
	// the replay cache to about 40 MB; a verifier that holds this many
	// refuses further signed requests (ErrReplayCacheFull, 503) until the
	// oldest expire. At one entry per signed request, it is full at about
	// 17,000 signed requests a second to one instance, sustained.
	MaxNonces = 1 << 19
)

// Signer signs the requests an instance sends to another (forwards, the
// internal endpoints, read-your-writes waits) and verifies the ones it
// receives, with HMAC-SHA256 under a secret that every instance shares.
//
// The signature covers the canonical form of a request, one item a line:
//
//	profiles-v1
//	<METHOD>
//	<escaped path>[?<raw query>]
//	<timestamp: Unix seconds, as in X-Profiles-Timestamp>
//	<name>:<values joined by ","> for each other X-Profiles-* header, the names lower-cased and sorted
//	authorization:<hex SHA-256 of the Authorization header, "" when absent>
//	body:<hex SHA-256 of the body>
//
// so nothing that decides what a request does (its path and query, the
// forwarding headers such as X-Profiles-Forwarded-By and X-Profiles-Uid,
// the caller's token, the body) can be changed or added without the
// secret, and a captured request is refused SignatureWindow after it was
// signed.
//
// Replays. The other X-Profiles-* headers include X-Profiles-Nonce
// (HeaderNonce), random for each Sign, so each signed request is unique.
// Verify requires one, and remembers the nonce of every request it
// accepts until that request's timestamp leaves SignatureWindow; the
// same request sent again (a replay, or a retry that reuses the signed
// headers) is refused like a bad signature (ErrReplayed, 403). So sign
// each attempt of a request anew, as the forwards and the internal calls
// do. The cache is bounded (MaxNonces, ErrReplayCacheFull) and safe for
// concurrent use.
//
// Known limits of the replay cache:
//   - It is per instance and in memory. The target instance (Host) is not
//     signed, and an instance does not know every name it is reached by,
//     so a request captured on its way to one instance can still be sent,
//     within the window, to another, which has not seen its nonce. (Any
//     name of the same instance shares its cache.) A forward replayed so
//     reaches a non-owner, which never forwards a forwarded request again
//     (bar query-svc's change of generation) and answers 503 unless it
//     becomes the owner within ROUTE_WAIT; but a signed call of the
//     internal endpoints (/internal/claims, which the receiver routes on
//     to the owner) would be served. A restarted instance has forgotten
//     its nonces too. The network between instances must still be
//     private (or carry TLS): it also carries the callers' tokens.
//   - A request signed without a nonce (by a version before it) is
//     refused, so instances of that version cannot reach upgraded ones:
//     upgrade them all together. (Upgraded instances can reach old ones,
//     which check the nonce's signature like any X-Profiles-* header's,
//     and ignore it otherwise.)
type Signer struct {
	keys [][]byte
	// Now is the clock (tests); nil means time.Now.
	Now    func() time.Time
	replay *nonceCache
}

// NewSigner returns a Signer that signs with secret and accepts signatures
// made with secret or any of previous (during a rotation of the secret).
// Each secret must be at least MinSecretLen bytes.
func NewSigner(secret string, previous ...string) (*Signer, error) {
	s := &Signer{}
	for i, k := range append([]string{secret}, previous...) {
		if len(k) < MinSecretLen {
			if i == 0 {
				return nil, fmt.Errorf("INTERNAL_SECRET must be at least %d bytes (it has %d)", MinSecretLen, len(k))
			}
			return nil, fmt.Errorf("every previous secret must be at least %d bytes", MinSecretLen)
		}
		s.keys = append(s.keys, []byte(k))
	}
	s.replay = newNonceCache(MaxNonces)
	return s, nil
}

func (s *Signer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return clock.Now() // the wall clock (see package clock)
}

// Sign sets HeaderNonce (a fresh one), HeaderTimestamp and HeaderSignature
// on r, an outgoing request whose body is body (nil for none). Set every
// other X-Profiles-* header, and Authorization, before: they are signed
// too. Sign every attempt: a receiver accepts each signed request once,
// so one sent again with the same headers is refused as a replay. (The
// only resend the instances leave to net/http, its automatic retry of an
// idempotent request whose reused connection broke, is refused so only
// when the receiver had already accepted the first copy and its answer
// was lost.) A nil Signer does nothing (no INTERNAL_SECRET).
func (s *Signer) Sign(r *http.Request, body []byte) {
	if s == nil {
		return
	}
	r.Header.Set(HeaderNonce, newNonce())
	ts := strconv.FormatInt(s.now().Unix(), 10)
	r.Header.Set(HeaderTimestamp, ts)
	r.Header.Set(HeaderSignature, "v1="+hex.EncodeToString(mac(s.keys[0], canonical(r, ts, body))))
}

// Verify checks the signature of r, a received request, and returns nil or
// an error wrapping ErrBadSignature: no signature, a timestamp outside
// SignatureWindow, no nonce, a signature that does not match, or a nonce
// it already accepted (ErrReplayed). When it remembers MaxNonces nonces
// already, it refuses a request it would accept with ErrReplayCacheFull
// (which is no bad signature: the request may be sent again later). It
// reads the body (at most MaxSignedBody) and puts it back for the
// handler. A nonce is remembered only once its signature is checked, so
// only holders of the secret can fill the cache.
func (s *Signer) Verify(r *http.Request) error {
	ts, sig := r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature)
	if ts == "" || sig == "" {
		return fmt.Errorf("%w: the request is not signed", ErrBadSignature)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: malformed %s", ErrBadSignature, HeaderTimestamp)
	}
	if age := s.now().Sub(time.Unix(sec, 0)); age > SignatureWindow || age < -SignatureWindow {
		return fmt.Errorf("%w: signed %s ago, outside the window of %s", ErrBadSignature, age.Round(time.Second), SignatureWindow)
	}
	got, err := hex.DecodeString(strings.TrimPrefix(sig, "v1="))
	if err != nil || !strings.HasPrefix(sig, "v1=") {
		return fmt.Errorf("%w: malformed %s", ErrBadSignature, HeaderSignature)
	}
	nonce, err := parseNonce(r.Header.Values(HeaderNonce))
	if err != nil {
		return err
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		body, err = io.ReadAll(io.LimitReader(r.Body, MaxSignedBody+1))
		r.Body.Close()
		if err != nil {
			return fmt.Errorf("%w: the body cannot be read: %v", ErrBadSignature, err)
		}
		if len(body) > MaxSignedBody {
			return fmt.Errorf("%w: the body is larger than %d bytes", ErrBadSignature, MaxSignedBody)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	c := canonical(r, ts, body)
	for _, k := range s.keys {
		if hmac.Equal(got, mac(k, c)) {
			// The timestamp was checked above: the request can pass the
			// window check until sec+SignatureWindow, and no longer.
			return s.replay.accept(nonce, sec+int64(SignatureWindow/time.Second), s.now())
		}
	}
	return fmt.Errorf("%w: the signature does not match", ErrBadSignature)
}

// newNonce returns a random nonce for HeaderNonce.
func newNonce() string {
	var b [NonceLen]byte
	_, _ = rand.Read(b[:]) // never fails (it crashes the program instead)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// parseNonce returns the nonce of a request's HeaderNonce values: exactly
// one, of NonceLen bytes.
func parseNonce(values []string) ([NonceLen]byte, error) {
	var n [NonceLen]byte
	if len(values) != 1 {
		return n, fmt.Errorf("%w: want one %s, got %d", ErrBadSignature, HeaderNonce, len(values))
	}
	b, err := base64.RawURLEncoding.DecodeString(values[0])
	if err != nil || len(b) != NonceLen {
		return n, fmt.Errorf("%w: malformed %s", ErrBadSignature, HeaderNonce)
	}
	copy(n[:], b)
	return n, nil
}

// nonceCache remembers the nonces of accepted requests until their
// timestamps leave SignatureWindow. It is safe for concurrent use.
type nonceCache struct {
	max int

	mu sync.Mutex
	// seen holds each nonce remembered, and the Unix second after which
	// its request can no longer pass the window check (its expiry).
	seen map[[NonceLen]byte]int64
	// expiring holds the same nonces by expiry: a few dozen seconds, as
	// timestamps are within the window of the clock.
	expiring map[int64][][NonceLen]byte
	// purged is the second of the last purge.
	purged int64
}

func newNonceCache(max int) *nonceCache {
	return &nonceCache{max: max, seen: map[[NonceLen]byte]int64{}, expiring: map[int64][][NonceLen]byte{}}
}

// accept remembers n, whose request expires at the Unix second expires,
// and returns nil; or ErrReplayed if it is remembered already, or
// ErrReplayCacheFull if max nonces are. It first forgets the nonces that
// expired before now (once a second).
func (c *nonceCache) accept(n [NonceLen]byte, expires int64, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sec := now.Unix(); sec != c.purged {
		c.purge(sec)
	}
	if _, ok := c.seen[n]; ok {
		return ErrReplayed
	}
	if len(c.seen) >= c.max {
		return ErrReplayCacheFull
	}
	c.seen[n] = expires
	c.expiring[expires] = append(c.expiring[expires], n)
	return nil
}

// purge forgets every nonce whose expiry is before the second sec: its
// request, sent again, is refused by the window check anyway.
func (c *nonceCache) purge(sec int64) {
	for at, nonces := range c.expiring {
		if at < sec {
			for _, n := range nonces {
				delete(c.seen, n)
			}
			delete(c.expiring, at)
		}
	}
	c.purged = sec
}

// len returns how many nonces are remembered.
func (c *nonceCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func mac(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// canonical is the signed form of r (see Signer).
func canonical(r *http.Request, ts string, body []byte) []byte {
	var b strings.Builder
	uri := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		uri += "?" + r.URL.RawQuery
	}
	fmt.Fprintf(&b, "profiles-v1\n%s\n%s\n%s\n", r.Method, uri, ts)
	var names []string
	for name := range r.Header {
		c := http.CanonicalHeaderKey(name)
		if strings.HasPrefix(c, internalPrefix) && c != HeaderSignature && c != HeaderTimestamp {
			names = append(names, name)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	for _, name := range names {
		fmt.Fprintf(&b, "%s:%s\n", strings.ToLower(name), strings.Join(r.Header[name], ","))
	}
	authz := ""
	if v := r.Header.Values("Authorization"); len(v) > 0 {
		sum := sha256.Sum256([]byte(strings.Join(v, ",")))
		authz = hex.EncodeToString(sum[:])
	}
	sum := sha256.Sum256(body)
	fmt.Fprintf(&b, "authorization:%s\nbody:%s", authz, hex.EncodeToString(sum[:]))
	return []byte(b.String())
}

// HasInternalHeaders reports whether h carries any X-Profiles-* header:
// one that only instances send each other.
func HasInternalHeaders(h http.Header) bool {
	for name := range h {
		if strings.HasPrefix(http.CanonicalHeaderKey(name), internalPrefix) {
			return true
		}
	}
	return false
}
