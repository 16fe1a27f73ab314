package httpx

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/trace"
)

var (
	requests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "profiles_http_requests_total",
		Help: "HTTP requests served, by route template, method and status code.",
	}, []string{"route", "method", "code"})
	latency = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "profiles_http_request_duration_seconds",
		Help:    "HTTP request latency, by route template and method.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "method"})
)

// AccessLog is the setting of the per-request access log (ACCESS_LOG):
// "on" logs every request at info, "off" none, "sample=N" one request in
// N. Server errors (5xx but 503) are logged at warn whatever the setting.
// The zero value is on.
type AccessLog struct {
	off   bool
	every uint64 // log one request in every; 0 or 1: all
	n     atomic.Uint64
}

// ParseAccessLog parses an ACCESS_LOG value: on, off or sample=N (N ≥ 1).
func ParseAccessLog(s string) (*AccessLog, error) {
	switch s := strings.TrimSpace(strings.ToLower(s)); {
	case s == "" || s == "on":
		return &AccessLog{}, nil
	case s == "off":
		return &AccessLog{off: true}, nil
	case strings.HasPrefix(s, "sample="):
		n, err := strconv.ParseUint(strings.TrimPrefix(s, "sample="), 10, 64)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("ACCESS_LOG %q: sample=N needs a whole N of 1 or more", s)
		}
		return &AccessLog{every: n}, nil
	}
	return nil, fmt.Errorf("ACCESS_LOG %q: want on, off or sample=N", s)
}

// sampled reports whether this request is one to log.
func (a *AccessLog) sampled() bool {
	if a == nil {
		return true
	}
	if a.off {
		return false
	}
	return a.every <= 1 || a.n.Add(1)%a.every == 1
}

// traceID returns the trace id of a W3C traceparent header
// (version-traceid-parentid-flags), or "".
func traceID(r *http.Request) string {
	tp := r.Header.Get("traceparent")
	if tp == "" {
		return ""
	}
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	for _, c := range parts[1] {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return ""
		}
	}
	return parts[1]
}

// Middleware is MiddlewareWith with every request logged.
func Middleware(log *slog.Logger) mux.MiddlewareFunc { return MiddlewareWith(log, nil) }

// MiddlewareWith returns mux middleware that recovers panics into a 500
// problem, logs requests as access says, and records Prometheus metrics
// labelled with the route template (never the raw path, so uids do not
// explode the label set). Install it with router.Use so the route is
// known.
//
// An access log line holds the method, the route template (never the
// path: it may hold a uid), the status, the duration, and the trace id of
// a W3C traceparent header when there is one; never the query string (a
// search's email) nor a body. The logger's own attributes (service,
// instance) come with it. The line is logged with the request's context:
// when that holds a span (tracing.Middleware, installed before this one),
// the logger's handler adds trace_id and span_id (tracing.LogHandler),
// and this middleware adds trace_id only for a request without one.
func MiddlewareWith(log *slog.Logger, access *AccessLog) mux.MiddlewareFunc {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			route := Route(r)
			defer func() {
				if v := recover(); v != nil {
					log.ErrorContext(r.Context(), "panic in handler", "route", route, "panic", fmt.Sprint(v))
					if !rec.wrote {
						WriteProblem(rec, r, NewProblem(http.StatusInternalServerError, "", "", "internal error"))
					}
				}
				d := time.Since(start)
				requests.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Inc()
				latency.WithLabelValues(route, r.Method).Observe(d.Seconds())
				level := slog.LevelInfo
				if rec.status >= 500 && rec.status != http.StatusServiceUnavailable {
					level = slog.LevelWarn
				} else if !access.sampled() {
					return
				}
				if !log.Enabled(r.Context(), level) {
					return
				}
				attrs := []any{"method", r.Method, "route", route, "status", rec.status, "duration_ms", float64(d.Microseconds()) / 1000}
				// With a span in the context, tracing.LogHandler adds
				// trace_id and span_id.
				if !trace.SpanContextFromContext(r.Context()).IsValid() {
					if id := traceID(r); id != "" {
						attrs = append(attrs, "trace_id", id)
					}
				}
				log.Log(r.Context(), level, "http request", attrs...)
			}()
			next.ServeHTTP(rec, r)
		})
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Route returns the template of the mux route that matched r, such as
// /api/profile/{uid} (the name of a route made by Path), or "unmatched".
// Logs name a request by it, never by its path, which may hold a uid.
func Route(r *http.Request) string {
	if cr := mux.CurrentRoute(r); cr != nil {
		if t, err := cr.GetPathTemplate(); err == nil {
			return t
		}
		if n := cr.GetName(); n != "" {
			return n
		}
	}
	return "unmatched"
}
