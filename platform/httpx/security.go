package httpx

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Security headers every response carries (SecurityHeaders).
var securityHeaders = map[string]string{
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
	// The API answers JSON, problem+json, YAML and event streams, never a
	// page: nothing may be loaded, run or framed on its behalf.
	"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}

// securityValues are securityHeaders as header values, under their
// canonical names, and Cache-Control's no-store: every response shares
// them. Each has a capacity of one, so that a handler that adds a value
// (Header.Add) appends to a copy and never to the shared array.
var securityValues, noStore = func() (map[string][]string, []string) {
	m := make(map[string][]string, len(securityHeaders))
	for k, v := range securityHeaders {
		m[http.CanonicalHeaderKey(k)] = []string{v}[:1:1]
	}
	return m, []string{"no-store"}[:1:1]
}()

// SecurityHeaders gives every response X-Content-Type-Options: nosniff,
// Referrer-Policy: no-referrer, a Content-Security-Policy that allows
// nothing (default-src 'none'; frame-ancestors 'none'), and Cache-Control:
// no-store unless the handler chose another Cache-Control (the change
// stream's no-cache). The headers are set when the response starts, over
// any of the same name a reverse proxy copied from upstream, so that they
// are never doubled. Wrap the whole handler, so that 404 and 405 answers
// get them too.
//
// A handler that serves a page (the front door's API page) may widen the
// Content-Security-Policy of its own response with SetPagePolicy.
func SecurityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page := new(string)
		r = r.WithContext(context.WithValue(r.Context(), pagePolicyKey{}, page))
		next.ServeHTTP(onStart(w, func(h http.Header) {
			for k, v := range securityValues {
				h[k] = v
			}
			if *page != "" {
				h.Set("Content-Security-Policy", *page)
			}
			if h.Get("Cache-Control") == "" {
				h["Cache-Control"] = noStore
			}
		}), r)
	})
}

type pagePolicyKey struct{}

// SetPagePolicy makes SecurityHeaders send policy as the
// Content-Security-Policy of the response to r, instead of the API's,
// which allows nothing. It reports false when r did not pass through
// SecurityHeaders. Only a handler that serves a page should call it.
func SetPagePolicy(r *http.Request, policy string) bool {
	p, ok := r.Context().Value(pagePolicyKey{}).(*string)
	if ok {
		*p = policy
	}
	return ok
}

// CORS answers cross-origin requests (the Fetch standard's CORS protocol)
// from the origins it allows.
type CORS struct {
	// AllowedOrigins are exact origins such as https://app.example.com, or
	// "*" for any. Empty turns CORS off: no CORS header is sent, and a
	// preflight gets what any OPTIONS request gets (405).
	AllowedOrigins []string
}

// Methods and headers a cross-origin caller may use, and the response
// headers it may read.
const (
	corsMethods = "GET, HEAD, POST, PUT, DELETE"
	corsHeaders = "Authorization, Content-Type, If-Match, Idempotency-Key, Prefer, Last-Event-ID"
	corsExposed = "ETag, Location, Retry-After, WWW-Authenticate, Idempotent-Replayed, Preference-Applied, X-Served-By, X-Profiles-Hops"
	corsMaxAge  = 600
)

func (c CORS) allowed(origin string) (string, bool) {
	switch {
	case origin == "":
		return "", false
	case slices.Contains(c.AllowedOrigins, "*"):
		return "*", true
	case slices.Contains(c.AllowedOrigins, origin):
		return origin, true
	}
	return "", false
}

// Wrap returns next with CORS. A preflight (OPTIONS with Origin and
// Access-Control-Request-Method) is answered here: 204 with the allowed
// methods and headers for an allowed origin, 403 problem for another. Any
// other request from an allowed origin gets Access-Control-Allow-Origin
// and the exposed headers on its response. Credentials (cookies) are never
// allowed: callers send bearer tokens. Wrap the whole handler, outside the
// router, which knows no OPTIONS routes.
func (c CORS) Wrap(next http.Handler) http.Handler {
	if len(c.AllowedOrigins) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		allow, ok := c.allowed(origin)
		if r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != "" {
			h := w.Header()
			addVary(h, "Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")
			if !ok {
				WriteProblem(w, r, NewProblem(http.StatusForbidden, "cors-origin-not-allowed", "Forbidden",
					"this origin may not call the API (CORS_ALLOWED_ORIGINS)"))
				return
			}
			h.Set("Access-Control-Allow-Origin", allow)
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsHeaders)
			h.Set("Access-Control-Max-Age", strconv.Itoa(corsMaxAge))
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(onStart(w, func(h http.Header) {
			addVary(h, "Origin")
			if ok {
				h.Set("Access-Control-Allow-Origin", allow)
				h.Set("Access-Control-Expose-Headers", corsExposed)
			} else {
				h.Del("Access-Control-Allow-Origin")
				h.Del("Access-Control-Expose-Headers")
			}
		}), r)
	})
}

// addVary adds names to the Vary header, once each.
func addVary(h http.Header, names ...string) {
	var have []string
	for _, v := range h.Values("Vary") {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" && !slices.ContainsFunc(have, func(x string) bool { return strings.EqualFold(x, n) }) {
				have = append(have, n)
			}
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(have, func(x string) bool { return strings.EqualFold(x, n) }) {
			have = append(have, n)
		}
	}
	h.Set("Vary", strings.Join(have, ", "))
}

// onStart returns w, calling apply on its headers once, just before the
// response starts (its status is written).
func onStart(w http.ResponseWriter, apply func(http.Header)) http.ResponseWriter {
	return &startWriter{ResponseWriter: w, apply: apply}
}

type startWriter struct {
	http.ResponseWriter
	apply   func(http.Header)
	started bool
}

func (s *startWriter) start() {
	if !s.started {
		s.started = true
		s.apply(s.ResponseWriter.Header())
	}
}

func (s *startWriter) WriteHeader(code int) {
	if code >= 200 { // not for 1xx informational answers
		s.start()
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *startWriter) Write(b []byte) (int, error) {
	s.start()
	return s.ResponseWriter.Write(b)
}

// Flush lets a handler (a stream, a reverse proxy) flush through.
func (s *startWriter) Flush() {
	s.start()
	_ = http.NewResponseController(s.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *startWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
