package auth

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

const (
	testSecret  = "0123456789abcdef0123456789abcdef-test"
	otherSecret = "fedcba9876543210fedcba9876543210-other"
)

// signedAt returns a signer whose clock says at.
func signedAt(t *testing.T, at time.Time, secret string, previous ...string) *Signer {
	t.Helper()
	s, err := NewSigner(secret, previous...)
	if err != nil {
		t.Fatal(err)
	}
	s.Now = func() time.Time { return at }
	return s
}

// clocked returns a signer whose clock says what *now says at each call.
func clocked(t *testing.T, now *time.Time, secret string) *Signer {
	t.Helper()
	s := signedAt(t, *now, secret)
	s.Now = func() time.Time { return *now }
	return s
}

// forwardBody is the body of forward's request.
const forwardBody = `{"username":"bob","email":"bob@mail.com"}`

// forward is a signed forward as an instance sends it: a PUT with a body,
// the caller's token and the forwarding headers.
func forward(t *testing.T, s *Signer) *http.Request {
	t.Helper()
	body := forwardBody
	r := httptest.NewRequest(http.MethodPut, "http://owner:8081/api/profile/74292b21-0fbb-4f1d-a18f-fa80f947fa5d?x=1", strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer caller-token")
	r.Header.Set("X-Profiles-Forwarded-By", "command-svc-0")
	r.Header.Set("X-Profiles-Uid", "74292b21-0fbb-4f1d-a18f-fa80f947fa5d")
	s.Sign(r, []byte(body))
	return r
}

func TestSigner(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	signer := signedAt(t, now, testSecret)
	tests := []struct {
		name    string
		verify  *Signer // nil: signer
		tamper  func(r *http.Request)
		wantErr bool
	}{
		{"valid", nil, func(*http.Request) {}, false},
		{"valid 29s later", signedAt(t, now.Add(29*time.Second), testSecret), func(*http.Request) {}, false},
		{"signed with the previous secret during a rotation", signedAt(t, now, otherSecret, testSecret), func(*http.Request) {}, false},
		{"tampered path", nil, func(r *http.Request) { r.URL.Path = "/api/profile/00000000-0000-4000-8000-000000000000" }, true},
		{"tampered query", nil, func(r *http.Request) { r.URL.RawQuery = "x=2" }, true},
		{"tampered method", nil, func(r *http.Request) { r.Method = http.MethodDelete }, true},
		{"tampered forwarding header", nil, func(r *http.Request) { r.Header.Set("X-Profiles-Uid", "00000000-0000-4000-8000-000000000000") }, true},
		{"added forwarding header", nil, func(r *http.Request) { r.Header.Set("X-Profiles-Routing-Epoch", "7") }, true},
		{"another caller's token", nil, func(r *http.Request) { r.Header.Set("Authorization", "Bearer someone-else") }, true},
		{"token removed", nil, func(r *http.Request) { r.Header.Del("Authorization") }, true},
		{"tampered body", nil, func(r *http.Request) {
			r.Body = io.NopCloser(strings.NewReader(`{"username":"eve","email":"eve@mail.com"}`))
		}, true},
		{"expired timestamp", signedAt(t, now.Add(31*time.Second), testSecret), func(*http.Request) {}, true},
		{"timestamp from the future", signedAt(t, now.Add(-31*time.Second), testSecret), func(*http.Request) {}, true},
		{"timestamp moved forward", signedAt(t, now.Add(time.Minute), testSecret), func(r *http.Request) {
			r.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Add(time.Minute).Unix(), 10))
		}, true},
		{"missing signature", nil, func(r *http.Request) { r.Header.Del(HeaderSignature) }, true},
		{"missing timestamp", nil, func(r *http.Request) { r.Header.Del(HeaderTimestamp) }, true},
		{"missing nonce", nil, func(r *http.Request) { r.Header.Del(HeaderNonce) }, true},
		{"malformed nonce", nil, func(r *http.Request) { r.Header.Set(HeaderNonce, "not base64url!") }, true},
		{"short nonce", nil, func(r *http.Request) { r.Header.Set(HeaderNonce, "AAAA") }, true},
		{"another nonce", nil, func(r *http.Request) { r.Header.Set(HeaderNonce, newNonce()) }, true},
		{"two nonces", nil, func(r *http.Request) { r.Header.Add(HeaderNonce, newNonce()) }, true},
		{"malformed signature", nil, func(r *http.Request) { r.Header.Set(HeaderSignature, "v1=zz") }, true},
		{"signature of another version", nil, func(r *http.Request) {
			r.Header.Set(HeaderSignature, "v2="+strings.TrimPrefix(r.Header.Get(HeaderSignature), "v1="))
		}, true},
		{"another secret", signedAt(t, now, otherSecret), func(*http.Request) {}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := forward(t, signer)
			tt.tamper(r)
			v := tt.verify
			if v == nil {
				v = signer
			}
			err := v.Verify(r)
			if tt.wantErr != (err != nil) {
				t.Fatalf("Verify = %v, want an error: %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("err %v does not wrap ErrBadSignature", err)
			}
			if err == nil {
				// The handler still gets the whole body.
				b, _ := io.ReadAll(r.Body)
				if string(b) != `{"username":"bob","email":"bob@mail.com"}` {
					t.Fatalf("body after Verify: %q", b)
				}
			}
		})
	}
}

func TestNewSignerRefusesShortSecrets(t *testing.T) {
	if _, err := NewSigner("short"); err == nil {
		t.Fatal("a 5-byte secret was accepted")
	}
	if _, err := NewSigner(testSecret, "short"); err == nil {
		t.Fatal("a 5-byte previous secret was accepted")
	}
	var s *Signer
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	s.Sign(r, nil) // a nil Signer signs nothing
	if r.Header.Get(HeaderSignature) != "" {
		t.Fatal("a nil Signer signed")
	}
}

// again returns a copy of r, a request forward made, as someone who
// captured it would send it again: the same method, URL, headers and body.
func again(r *http.Request) *http.Request {
	c := httptest.NewRequest(r.Method, r.URL.String(), strings.NewReader(forwardBody))
	c.Header = r.Header.Clone()
	return c
}

// A signed request is accepted once: sent again with the same headers
// within the window, it is refused like a bad signature; the same request
// signed anew (a retry, which gets a fresh nonce) is accepted.
func TestSignerRefusesReplays(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	sender := signedAt(t, now, testSecret)
	receiver := signedAt(t, now.Add(2*time.Second), testSecret)
	first := forward(t, sender)
	replay := again(first)
	if err := receiver.Verify(first); err != nil {
		t.Fatalf("the first request: %v", err)
	}
	err := receiver.Verify(replay)
	if !errors.Is(err, ErrReplayed) || !errors.Is(err, ErrBadSignature) {
		t.Fatalf("the replay: %v, want ErrReplayed, an ErrBadSignature", err)
	}
	// Another instance's cache has not seen the nonce (the known limit).
	if err := signedAt(t, now, testSecret).Verify(again(first)); err != nil {
		t.Fatalf("the replay at another instance: %v", err)
	}
	retry := forward(t, sender)
	if retry.Header.Get(HeaderNonce) == first.Header.Get(HeaderNonce) {
		t.Fatal("Sign reused a nonce")
	}
	if err := receiver.Verify(retry); err != nil {
		t.Fatalf("the same request signed again: %v", err)
	}
	if err := receiver.Verify(again(retry)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("the retry's replay: %v, want ErrReplayed", err)
	}
	// A request that fails its signature check leaves no nonce behind.
	tampered := forward(t, sender)
	tampered.Header.Set("X-Profiles-Uid", "00000000-0000-4000-8000-000000000000")
	if err := receiver.Verify(tampered); err == nil || errors.Is(err, ErrReplayed) {
		t.Fatalf("a tampered request: %v", err)
	}
	if n := receiver.replay.len(); n != 2 {
		t.Fatalf("%d nonces remembered, want 2", n)
	}
}

// The cache forgets a nonce once its request's timestamp has left the
// window: a replay of it is refused by the window check from then on.
func TestSignerForgetsExpiredNonces(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	now := start
	receiver := clocked(t, &now, testSecret)
	old := forward(t, signedAt(t, start, testSecret))
	if err := receiver.Verify(again(old)); err != nil {
		t.Fatal(err)
	}
	now = start.Add(SignatureWindow) // the last moment the request passes
	if err := receiver.Verify(again(old)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("a replay at the end of the window: %v, want ErrReplayed", err)
	}
	now = start.Add(SignatureWindow + 1500*time.Millisecond)
	if err := receiver.Verify(forward(t, signedAt(t, now, testSecret))); err != nil {
		t.Fatal(err)
	}
	if n := receiver.replay.len(); n != 1 {
		t.Fatalf("%d nonces remembered after the first expired, want 1", n)
	}
	if _, ok := receiver.replay.seen[mustNonce(t, old)]; ok {
		t.Fatal("the expired nonce is still remembered")
	}
	err := receiver.Verify(again(old))
	if !errors.Is(err, ErrBadSignature) || errors.Is(err, ErrReplayed) || !strings.Contains(err.Error(), "outside the window") {
		t.Fatalf("a replay after the window: %v, want the window's refusal", err)
	}
}

// The cache holds at most its bound: beyond it, a valid request is
// refused with ErrReplayCacheFull (no bad signature), until nonces expire.
func TestSignerReplayCacheIsBounded(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	now := start
	receiver := clocked(t, &now, testSecret)
	receiver.replay.max = 2
	sender := signedAt(t, start, testSecret)
	for i := range 2 {
		if err := receiver.Verify(forward(t, sender)); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	full := forward(t, sender)
	err := receiver.Verify(full)
	if !errors.Is(err, ErrReplayCacheFull) || errors.Is(err, ErrBadSignature) {
		t.Fatalf("a request beyond the bound: %v, want ErrReplayCacheFull only", err)
	}
	// Refused for want of room, its nonce was not remembered: sent again
	// (signed anew) once the others expired, it is served.
	now = start.Add(SignatureWindow + 2*time.Second)
	if err := receiver.Verify(forward(t, signedAt(t, now, testSecret))); err != nil {
		t.Fatalf("after the others expired: %v", err)
	}
	if n := receiver.replay.len(); n != 1 {
		t.Fatalf("%d nonces remembered, want 1", n)
	}
}

func mustNonce(t *testing.T, r *http.Request) [NonceLen]byte {
	t.Helper()
	n, err := parseNonce(r.Header.Values(HeaderNonce))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
