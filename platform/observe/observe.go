// Package observe sets up the structured logger and the Prometheus metrics
// endpoint that every profiles binary exposes.
package observe

import (
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"profiles/platform/tracing"
)

// SetupLogger installs a slog default logger writing to stderr. format is
// "json" or "text"; level is debug, info, warn or error. Every record
// carries the service name, and a record logged with the context of a
// traced request or record carries its trace_id and span_id
// (tracing.LogHandler).
func SetupLogger(service, format, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewJSONHandler(os.Stderr, opts)
	if strings.EqualFold(format, "text") {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	log := slog.New(tracing.LogHandler(h)).With("service", service)
	slog.SetDefault(log)
	return log
}

// MetricsHandler serves the default Prometheus registry.
func MetricsHandler() http.Handler { return promhttp.Handler() }
