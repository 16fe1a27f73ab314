// Package observe sets up the structured logger and the Prometheus metrics
// endpoint that every profiles binary exposes.
package observe

import (
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// SetupLogger installs a slog default logger writing to stderr. format is
// "json" or "text"; level is debug, info, warn or error. Every record
// carries the service name.
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
	log := slog.New(h).With("service", service)
	slog.SetDefault(log)
	return log
}

// MetricsHandler serves the default Prometheus registry.
func MetricsHandler() http.Handler { return promhttp.Handler() }
