package httpx

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSecurityHeaders(t *testing.T) {
	tests := []struct {
		name         string
		handler      http.HandlerFunc
		cacheControl string
	}{
		{"JSON answer", func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, http.StatusOK, map[string]string{"a": "b"}) }, "no-store"},
		{"problem", func(w http.ResponseWriter, r *http.Request) {
			WriteProblem(w, r, NewProblem(http.StatusNotFound, "", "", "no"))
		}, "no-store"},
		{"no body at all", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }, "no-store"},
		{"a stream keeps its own Cache-Control", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
		}, "no-cache"},
		{"headers a proxy copied from upstream are not doubled", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("X-Content-Type-Options", "nosniff")
			w.Header().Add("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
			w.Header().Add("Referrer-Policy", "no-referrer")
			_, _ = w.Write([]byte("{}"))
		}, "no-store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			SecurityHeaders(tt.handler).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/x", nil))
			want := map[string]string{
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
				"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
				"Cache-Control":           tt.cacheControl,
			}
			for k, v := range want {
				if got := w.Result().Header.Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("%s = %q, want exactly %q", k, got, v)
				}
			}
		})
	}
}

func TestCORS(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Upstream-CORS") != "" { // as a proxied service that allows CORS itself would
			w.Header().Add("Access-Control-Allow-Origin", r.Header.Get("Origin"))
		}
		if r.Method == http.MethodOptions {
			WriteProblem(w, r, NewProblem(http.StatusMethodNotAllowed, "", "", "no OPTIONS route"))
			return
		}
		WriteJSON(w, http.StatusOK, []string{})
	})
	tests := []struct {
		name       string
		allowed    []string
		method     string
		origin     string
		preflight  bool
		upstream   bool
		status     int
		wantOrigin string // Access-Control-Allow-Origin; "" for none
		wantVary   bool
	}{
		{"off: no CORS headers", nil, "GET", "https://app.example", false, false, 200, "", false},
		{"off: a preflight is an OPTIONS like any other", nil, "OPTIONS", "https://app.example", true, false, 405, "", false},
		{"allowed origin", []string{"https://app.example"}, "GET", "https://app.example", false, false, 200, "https://app.example", true},
		{"another origin", []string{"https://app.example"}, "GET", "https://evil.example", false, false, 200, "", true},
		{"no origin: not a CORS request", []string{"https://app.example"}, "GET", "", false, false, 200, "", true},
		{"any origin", []string{"*"}, "GET", "https://anyone.example", false, false, 200, "*", true},
		{"preflight of an allowed origin", []string{"https://app.example"}, "OPTIONS", "https://app.example", true, false, 204, "https://app.example", true},
		{"preflight of another origin", []string{"https://app.example"}, "OPTIONS", "https://evil.example", true, false, 403, "", true},
		{"a proxied answer's own header is not doubled", []string{"https://app.example"}, "PUT", "https://app.example", false, true, 200, "https://app.example", true},
		{"a proxied answer's header for another origin is dropped", []string{"https://app.example"}, "PUT", "https://evil.example", false, true, 200, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "/api/profile", nil)
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			if tt.preflight {
				r.Header.Set("Access-Control-Request-Method", "PUT")
				r.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
			}
			if tt.upstream {
				r.Header.Set("X-Upstream-CORS", "1")
			}
			w := httptest.NewRecorder()
			CORS{AllowedOrigins: tt.allowed}.Wrap(next).ServeHTTP(w, r)
			h := w.Result().Header
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if got := h.Values("Access-Control-Allow-Origin"); (tt.wantOrigin == "" && len(got) != 0) || (tt.wantOrigin != "" && (len(got) != 1 || got[0] != tt.wantOrigin)) {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tt.wantOrigin)
			}
			if vary := strings.Join(h.Values("Vary"), ","); strings.Contains(vary, "Origin") != tt.wantVary {
				t.Fatalf("Vary %q", vary)
			}
			if tt.status == 204 {
				for _, k := range []string{"Access-Control-Allow-Methods", "Access-Control-Allow-Headers", "Access-Control-Max-Age"} {
					if h.Get(k) == "" {
						t.Fatalf("preflight answer lacks %s", k)
					}
				}
				if !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
					t.Fatalf("Authorization is not an allowed header: %q", h.Get("Access-Control-Allow-Headers"))
				}
			}
			if tt.wantOrigin != "" && tt.status == 200 && !strings.Contains(h.Get("Access-Control-Expose-Headers"), "WWW-Authenticate") {
				t.Fatalf("Access-Control-Expose-Headers %q", h.Get("Access-Control-Expose-Headers"))
			}
			if h.Get("Access-Control-Allow-Credentials") != "" {
				t.Fatal("credentials must never be allowed")
			}
		})
	}
}

func TestRateLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewRateLimiter(1, 2) // 1 request per second, bursts of 2
	l.now = func() time.Time { return now }
	steps := []struct {
		name    string
		advance time.Duration
		key     string
		allowed bool
	}{
		{"first of the burst", 0, "sub:alice", true},
		{"second of the burst", 0, "sub:alice", true},
		{"over the burst", 0, "sub:alice", false},
		{"another client has its own bucket", 0, "sub:bob", true},
		{"half a second later, still none", 500 * time.Millisecond, "sub:alice", false},
		{"a second after the burst, one more", 500 * time.Millisecond, "sub:alice", true},
		{"and then none again", 0, "sub:alice", false},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		ok, wait := l.Allow(s.key)
		if ok != s.allowed {
			t.Fatalf("%s: Allow = %v, want %v", s.name, ok, s.allowed)
		}
		if !ok && (wait <= 0 || wait > time.Second) {
			t.Fatalf("%s: wait %v", s.name, wait)
		}
	}
	// Idle buckets are forgotten once they would be full again.
	now = now.Add(time.Minute)
	l.Allow("sub:carol")
	if _, ok := l.buckets["sub:alice"]; ok || len(l.buckets) != 1 {
		t.Fatalf("buckets after a minute idle: %v", len(l.buckets))
	}
}

func TestRateLimitMiddleware(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	byHeader := func(r *http.Request) (string, bool) {
		k := r.Header.Get("X-Client")
		return k, k != ""
	}
	tests := []struct {
		name     string
		limiter  *RateLimiter
		client   string
		requests int
		want     []int
	}{
		{"within the burst", NewRateLimiter(0.001, 3), "a", 3, []int{204, 204, 204}},
		{"over the burst: 429", NewRateLimiter(0.001, 2), "a", 3, []int{204, 204, 429}},
		{"requests without a key are not limited", NewRateLimiter(0.001, 1), "", 3, []int{204, 204, 204}},
		{"no limiter (RATE_LIMIT_RPS=0)", NewRateLimiter(0, 1), "a", 3, []int{204, 204, 204}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.limiter.Middleware(byHeader)(ok)
			for i, want := range tt.want {
				r := httptest.NewRequest(http.MethodGet, "/api/x", nil)
				if tt.client != "" {
					r.Header.Set("X-Client", tt.client)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != want {
					t.Fatalf("request %d: status %d, want %d", i, w.Code, want)
				}
				if want == http.StatusTooManyRequests {
					if w.Header().Get("Retry-After") == "" || w.Header().Get("Content-Type") != ProblemContentType ||
						!strings.Contains(w.Body.String(), "urn:profiles:problem:rate-limited") {
						t.Fatalf("429 answer: %v %s", w.Header(), w.Body)
					}
				}
			}
		})
	}
}

func TestSetPagePolicyWidensOnlyItsOwnResponse(t *testing.T) {
	const page = "default-src 'none'; script-src 'self'"
	h := SecurityHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/docs" && !SetPagePolicy(r, page) {
			t.Error("SetPagePolicy found no SecurityHeaders")
		}
		// A policy a handler (or a proxied upstream) set itself is still
		// replaced.
		w.Header().Set("Content-Security-Policy", "default-src *")
		w.WriteHeader(http.StatusOK)
	}))
	for path, want := range map[string]string{"/docs": page, "/api/x": "default-src 'none'; frame-ancestors 'none'"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if got := w.Header().Values("Content-Security-Policy"); len(got) != 1 || got[0] != want {
			t.Errorf("%s: Content-Security-Policy %q, want %q", path, got, want)
		}
	}
	if SetPagePolicy(httptest.NewRequest(http.MethodGet, "/docs", nil), page) {
		t.Error("SetPagePolicy reported true outside SecurityHeaders")
	}
}

// The security headers' values are shared by every response: a handler
// that adds to one, after the response started, changes nothing of the
// next response's.
func TestSecurityHeadersAreNotChangedThroughAResponse(t *testing.T) {
	h := SecurityHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		if r.URL.Path == "/add" {
			w.Header().Add("X-Content-Type-Options", "other")
			w.Header().Add("Cache-Control", "private")
		}
	}))
	for _, path := range []string{"/add", "/", "/add", "/"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		want := 1
		if path == "/add" {
			want = 2
		}
		if v := rec.Header().Values("X-Content-Type-Options"); len(v) != want || v[0] != "nosniff" {
			t.Fatalf("%s: X-Content-Type-Options %q", path, v)
		}
		if v := rec.Header().Values("Cache-Control"); len(v) != want || v[0] != "no-store" {
			t.Fatalf("%s: Cache-Control %q", path, v)
		}
	}
	if v := securityValues["X-Content-Type-Options"]; len(v) != 1 || v[0] != "nosniff" || len(noStore) != 1 {
		t.Fatalf("the shared values changed: %q %q", v, noStore)
	}
}
