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

// forward is a signed forward as an instance sends it: a PUT with a body,
// the caller's token and the forwarding headers.
func forward(t *testing.T, s *Signer) *http.Request {
	t.Helper()
	body := `{"username":"bob","email":"bob@mail.com"}`
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
