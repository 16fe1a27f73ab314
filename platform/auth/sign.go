package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Headers of a signed request between instances.
const (
	// HeaderTimestamp is when the request was signed, in Unix seconds.
	HeaderTimestamp = "X-Profiles-Timestamp"
	// HeaderSignature is "v1=" and the hex HMAC-SHA256 of the request's
	// canonical form (see Signer).
	HeaderSignature = "X-Profiles-Signature"
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
// so nothing that decides what a request does (its target, the forwarding
// headers such as X-Profiles-Forwarded-By and X-Profiles-Uid, the caller's
// token, the body) can be changed or added without the secret, and a
// captured request is refused SignatureWindow after it was signed. Within
// the window it could be replayed by someone who can read the traffic
// between instances; that network must be private (or carry TLS).
type Signer struct {
	keys [][]byte
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
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
	return s, nil
}

func (s *Signer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Sign sets HeaderTimestamp and HeaderSignature on r, an outgoing request
// whose body is body (nil for none). Set every other X-Profiles-* header,
// and Authorization, before: they are signed too. A nil Signer does
// nothing (no INTERNAL_SECRET).
func (s *Signer) Sign(r *http.Request, body []byte) {
	if s == nil {
		return
	}
	ts := strconv.FormatInt(s.now().Unix(), 10)
	r.Header.Set(HeaderTimestamp, ts)
	r.Header.Set(HeaderSignature, "v1="+hex.EncodeToString(mac(s.keys[0], canonical(r, ts, body))))
}

// Verify checks the signature of r, a received request, and returns nil or
// an error wrapping ErrBadSignature: no signature, a timestamp outside
// SignatureWindow, or a signature that does not match. It reads the body
// (at most MaxSignedBody) and puts it back for the handler.
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
			return nil
		}
	}
	return fmt.Errorf("%w: the signature does not match", ErrBadSignature)
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
