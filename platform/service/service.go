// Package service is the start-up and shut-down skeleton that every profiles
// binary shares, so that each main only wires its own parts: common flags,
// the logger, a router with health, readiness, metrics and problem+json
// fallbacks, and Run, which serves HTTP and runs background tasks until a
// signal or the first failure, then stops them in order.
package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/observe"
)

// Flags are the settings every binary has.
type Flags struct {
	HTTPAddr      *string
	InstanceID    *string
	AdvertiseURL  *string
	LogLevel      *string
	LogFormat     *string
	ShutdownGrace *time.Duration
	// CORSOrigins is CORS_ALLOWED_ORIGINS (see CORS).
	CORSOrigins *string
}

// RegisterFlags registers the common settings on fs, with defaultAddr as
// the default HTTP listen address.
func RegisterFlags(fs *flag.FlagSet, defaultAddr string) *Flags {
	return &Flags{
		HTTPAddr:      config.String(fs, "http-addr", "HTTP_ADDR", defaultAddr, "HTTP listen address"),
		InstanceID:    config.String(fs, "instance-id", "INSTANCE_ID", "", "stable name of this instance; also its static group membership id (default: <service>@<advertise host:port>)"),
		AdvertiseURL:  config.String(fs, "advertise-url", "ADVERTISE_URL", "", "base URL other instances use to reach this one (default: http://<HTTP_ADDR host, or 127.0.0.1>:<port>)"),
		LogLevel:      config.String(fs, "log-level", "LOG_LEVEL", "info", "log level: debug, info, warn or error"),
		LogFormat:     config.String(fs, "log-format", "LOG_FORMAT", "json", "log format: json or text"),
		ShutdownGrace: config.Duration(fs, "shutdown-grace", "SHUTDOWN_GRACE", 15*time.Second, "how long requests in flight may take to finish at shutdown"),
		CORSOrigins:   config.String(fs, "cors-allowed-origins", "CORS_ALLOWED_ORIGINS", "", "comma-separated origins (https://app.example.com, or *) whose browser pages may call the API; empty: CORS off"),
	}
}

// Self returns the instance's identity as advertised to its group. Without
// INSTANCE_ID the membership is dynamic (a restart is a new member).
func (f *Flags) Self(service string) (m kafkax.Member, static bool, err error) {
	m.URL = *f.AdvertiseURL
	if m.URL == "" {
		host, port, err := net.SplitHostPort(*f.HTTPAddr)
		if err != nil {
			return m, false, fmt.Errorf("HTTP_ADDR %q: %w", *f.HTTPAddr, err)
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		m.URL = "http://" + net.JoinHostPort(host, port)
	}
	m.ID = *f.InstanceID
	if m.ID == "" {
		m.ID = service + "@" + strings.TrimPrefix(strings.TrimPrefix(m.URL, "http://"), "https://")
	}
	return m, *f.InstanceID != "", nil
}

// CORS wraps h with the CORS of CORS_ALLOWED_ORIGINS (httpx.CORS; none
// when empty). Wrap the whole router: preflights match no route.
func (f *Flags) CORS(h http.Handler) http.Handler {
	return httpx.CORS{AllowedOrigins: config.List(*f.CORSOrigins)}.Wrap(h)
}

// Logger installs and returns the service's logger.
func (f *Flags) Logger(name string) *slog.Logger {
	return observe.SetupLogger(name, *f.LogFormat, *f.LogLevel)
}

// NewRouter returns a router that answers unknown routes and methods with
// problem details, instruments every route, and serves /healthz, /readyz
// (from health) and /metrics.
func NewRouter(log *slog.Logger, health *httpx.Health) *mux.Router {
	r := mux.NewRouter()
	r.NotFoundHandler = httpx.NotFoundHandler
	r.MethodNotAllowedHandler = httpx.MethodNotAllowedHandler
	r.Use(httpx.Middleware(log))
	r.HandleFunc("/healthz", health.Healthz).Methods(http.MethodGet)
	r.HandleFunc("/readyz", health.Readyz).Methods(http.MethodGet)
	r.Handle("/metrics", observe.MetricsHandler())
	return r
}

// Task is a background part of a service, such as a consumer. It must
// return when ctx ends; returning earlier (with or without an error) stops
// the whole service.
type Task func(ctx context.Context) error

// Run listens on addr and serves h, with httpx.SecurityHeaders on every
// response, and runs every task, until ctx ends or a task or the server
// stops. It then shuts down: the server first (it stops
// accepting and lets requests in flight finish for up to grace), then the
// tasks. It returns the first failure, or nil after a clean stop.
func Run(ctx context.Context, log *slog.Logger, addr string, h http.Handler, grace time.Duration, tasks ...Task) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	taskCtx, stopTasks := context.WithCancel(context.Background())
	defer stopTasks()
	httpCtx, stopHTTP := context.WithCancel(ctx)
	defer stopHTTP()

	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	fail := func(what string, err error) {
		once.Do(func() {
			if err != nil {
				firstErr = fmt.Errorf("%s: %w", what, err)
				log.Error("stopping after failure", "part", what, "err", err)
			}
			stopHTTP()
		})
	}
	for i, task := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := task(taskCtx)
			if taskCtx.Err() == nil {
				if err == nil {
					err = errors.New("stopped unexpectedly")
				}
				fail(fmt.Sprintf("task %d", i), err)
			}
		}()
	}
	srv := httpx.NewServer(httpx.SecurityHeaders(h))
	srv.BaseContext = func(net.Listener) context.Context { return taskCtx }
	if err := httpx.Serve(httpCtx, srv, ln, grace); err != nil {
		fail("http server", err)
	}
	log.Info("http server stopped; stopping background tasks")
	stopTasks()
	wg.Wait()
	return firstErr
}
