package service

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"profiles/platform/httpx"
)

// NewRouter's own routes answer as routes of the router: with its
// middleware (the route template is known), 405 and 404 as problems, and
// the routes added after them are reached too.
func TestNewRouterRoutes(t *testing.T) {
	var health httpx.Health
	r := NewRouter(slog.New(slog.DiscardHandler), &health)
	var route string
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			route = httpx.Route(req)
			next.ServeHTTP(w, req)
		})
	})
	r.HandleFunc("/api/thing/{id}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }).Methods(http.MethodGet)
	for _, tc := range []struct {
		method, path string
		status       int
		route        string
	}{
		{http.MethodGet, "/healthz", 200, "/healthz"},
		{http.MethodGet, "/readyz", 200, "/readyz"},
		{http.MethodGet, "/metrics", 200, "/metrics"},
		{http.MethodGet, "/api/thing/7", http.StatusTeapot, "/api/thing/{id}"},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed, ""},
		{http.MethodPost, "/api/thing/7", http.StatusMethodNotAllowed, ""},
		{http.MethodGet, "/healthz/", http.StatusNotFound, ""},
		{http.MethodGet, "/nothing", http.StatusNotFound, ""},
	} {
		route = ""
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.status || route != tc.route {
			t.Errorf("%s %s: %d, route %q; want %d, %q", tc.method, tc.path, rec.Code, route, tc.status, tc.route)
		}
		if tc.route == "" && rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: Content-Type %q, want a problem", tc.method, tc.path, rec.Header().Get("Content-Type"))
		}
	}
}
