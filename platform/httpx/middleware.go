package httpx

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
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

// Middleware returns mux middleware that recovers panics into a 500 problem,
// logs each request with slog, and records Prometheus metrics labelled with
// the route template (never the raw path, so uids do not explode the label
// set). Install it with router.Use so the route is known.
func Middleware(log *slog.Logger) mux.MiddlewareFunc {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			route := "unmatched"
			if cr := mux.CurrentRoute(r); cr != nil {
				if t, err := cr.GetPathTemplate(); err == nil {
					route = t
				}
			}
			defer func() {
				if v := recover(); v != nil {
					log.Error("panic in handler", "route", route, "panic", fmt.Sprint(v))
					if !rec.wrote {
						WriteProblem(rec, r, NewProblem(http.StatusInternalServerError, "", "", "internal error"))
					}
				}
				d := time.Since(start)
				requests.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Inc()
				latency.WithLabelValues(route, r.Method).Observe(d.Seconds())
				level := slog.LevelDebug
				if rec.status >= 500 && rec.status != http.StatusServiceUnavailable {
					level = slog.LevelWarn
				}
				log.Log(r.Context(), level, "http request", "method", r.Method, "path", r.URL.Path,
					"route", route, "status", rec.status, "duration", d)
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
