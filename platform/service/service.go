// Package service is the start-up and shut-down skeleton that every profiles
// binary shares, so that each main only wires its own parts: common flags,
// the logger, a router with health, readiness, metrics and problem+json
// fallbacks, and Run, which serves HTTP and runs background tasks until a
// signal or the first failure, then stops them in order.
package service

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/observe"
	"profiles/platform/tracing"
)

// Flags are the settings every binary has.
type Flags struct {
	HTTPAddr      *string
	InstanceID    *string
	AdvertiseURL  *string
	LogLevel      *string
	LogFormat     *string
	ShutdownGrace *time.Duration
	// DrainGrace and DrainHandover time the drain at SIGTERM (see Stop).
	DrainGrace    *time.Duration
	DrainHandover *time.Duration
	DrainLeave    *bool
	// StopTimeout bounds the close of the background tasks (see Stop).
	StopTimeout *time.Duration
	// AccessLog is ACCESS_LOG (see httpx.AccessLog); PprofAddr is
	// PPROF_ADDR (see Pprof).
	AccessLog *string
	PprofAddr *string
	// Version is -version: print the build and exit (see Serve).
	Version *bool
	// Healthcheck is -healthcheck: probe the instance on HTTP_ADDR and
	// exit 0 when it is ready, 1 when not (see Serve and Healthcheck).
	Healthcheck *bool

	access *httpx.AccessLog // ACCESS_LOG, parsed by Serve
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
		DrainGrace:    config.Duration(fs, "drain-grace", "DRAIN_GRACE", 5*time.Second, "at SIGTERM, how long the instance keeps serving with /readyz failing (so that load balancers stop sending to it) before it hands its partitions over"),
		DrainHandover: config.Duration(fs, "drain-handover", "DRAIN_HANDOVER", 2*time.Second, "at SIGTERM, how long the instance keeps serving (forwarding to the new owners) after it left its consumer groups, so that the front door and the other instances learn the new owners, before it stops listening"),
		DrainLeave:    config.Bool(fs, "drain-leave", "DRAIN_LEAVE", true, "at SIGTERM, leave the consumer groups so that the partitions move at once; false keeps a static member's partitions for the session timeout (a restart in place within it gets them back without a rebalance)"),
		StopTimeout:   config.Duration(fs, "stop-timeout", "STOP_TIMEOUT", DefaultStopTimeout, "at shutdown, how long the consumers and producers may take to stop once the HTTP server has stopped; past it the process exits without closing them (the stores recover from their write-ahead logs at the next start)"),
		AccessLog:     config.String(fs, "access-log", "ACCESS_LOG", "on", "the per-request access log at info: on, off, or sample=N (one request in N); server errors are logged at warn whatever it says"),
		PprofAddr:     config.String(fs, "pprof-addr", "PPROF_ADDR", "", "address of a separate listener for net/http/pprof (e.g. 127.0.0.1:6060); empty: off. Never expose it publicly"),
		Version:       fs.Bool("version", false, "print the version, VCS revision and Go version, and exit"),
		Healthcheck:   fs.Bool("healthcheck", false, "probe the instance listening on HTTP_ADDR on this machine (GET /readyz) and exit 0 when it is ready, 1 when not: a container health check"),
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

// Logger installs and returns the service's logger. Every record carries
// the service name and the instance id (see Self).
func (f *Flags) Logger(name string) *slog.Logger {
	log := observe.SetupLogger(name, *f.LogFormat, *f.LogLevel)
	if m, _, err := f.Self(name); err == nil {
		log = log.With("instance", m.ID)
		slog.SetDefault(log)
	}
	return log
}

// RouterOption changes a router of NewRouter.
type RouterOption func(*routerOptions)

type routerOptions struct{ access *httpx.AccessLog }

// WithAccessLog sets the access log of the router's requests (the
// default logs every request).
func WithAccessLog(a *httpx.AccessLog) RouterOption {
	return func(o *routerOptions) { o.access = a }
}

// AccessLogOption is WithAccessLog of ACCESS_LOG, as Serve parsed it (an
// invalid value stops Serve before its wire runs).
func (f *Flags) AccessLogOption() RouterOption { return WithAccessLog(f.access) }

// NewRouter returns a router that answers unknown routes and methods with
// problem details, traces the API and internal routes (tracing.Middleware),
// instruments and logs every route (httpx.MiddlewareWith),
// and serves /healthz, /readyz (from health) and /metrics.
func NewRouter(log *slog.Logger, health *httpx.Health, opts ...RouterOption) *mux.Router {
	var o routerOptions
	for _, opt := range opts {
		opt(&o)
	}
	r := mux.NewRouter()
	r.NotFoundHandler = httpx.NotFoundHandler
	r.MethodNotAllowedHandler = httpx.MethodNotAllowedHandler
	r.Use(tracing.Middleware)
	r.Use(httpx.MiddlewareWith(log, o.access))
	// The router tries its routes in order, each with a regexp. These come
	// first, so each is guarded by a comparison of the path, and a request
	// of the API reaches its own routes without running their regexps.
	pathIs(r, "/healthz").HandlerFunc(health.Healthz).Methods(http.MethodGet)
	pathIs(r, "/readyz").HandlerFunc(health.Readyz).Methods(http.MethodGet)
	pathIs(r, "/metrics").Handler(observe.MetricsHandler())
	return r
}

// pathIs adds a route of r for path that compares the path before it runs
// the route's regexp. (A subrouter behind one such comparison would lose
// a 405: gorilla/mux clears a method mismatch whenever a later route's
// matcher matches, and a subrouter's routes inherit the comparison.)
func pathIs(r *mux.Router, path string) *mux.Route {
	return r.MatcherFunc(func(req *http.Request, _ *mux.RouteMatch) bool { return req.URL.Path == path }).Path(path)
}

// Stop is how a service stops at SIGTERM or SIGINT (the end of Run's ctx).
//
//  1. It drains: /readyz answers 503 at once, and everything else is served
//     as before for DrainGrace, so that load balancers and Kubernetes stop
//     sending new requests to it.
//  2. It hands its partitions over: every consumer group it is a member of
//     (kafkax.Group, through kafkax.Drain) ends its session and leaves the
//     group, so that the partitions move at once, not after the session
//     timeout. It keeps serving, and forwards requests for its former
//     partitions to their new owners, for DrainHandover.
//  3. The HTTP server stops accepting and lets requests in flight finish
//     for up to Grace; then the tasks stop, within TaskStop.
//
// A task that has not returned TaskStop after its context ended (a
// consumer whose close waits for brokers that cannot be reached: sarama
// retries its last offset commit and coordinator lookups for minutes) is
// given up: RunStop returns ErrStopTimeout, and Start then exits without
// closing what the tasks still use.
//
// A failure of a part skips the drain and stops at once.
//
// With NoLeave, step 2 is skipped: a static member keeps its partitions
// until its session times out (nothing serves them meanwhile), and gets
// them back without a rebalance if it restarts before that.
type Stop struct {
	NoLeave       bool
	Grace         time.Duration
	DrainGrace    time.Duration
	DrainHandover time.Duration
	// TaskStop bounds the wait for the tasks once their context ended; 0
	// means DefaultStopTimeout.
	TaskStop time.Duration
}

// DefaultStopTimeout is STOP_TIMEOUT's default: the tasks of a healthy
// service stop within a second of their context's end.
const DefaultStopTimeout = 10 * time.Second

// ErrStopTimeout is returned (wrapped) by RunStop when its tasks did not
// stop within Stop.TaskStop.
var ErrStopTimeout = errors.New("the background tasks did not stop in time")

var drainStarted = promauto.NewGauge(prometheus.GaugeOpts{
	Name: "profiles_drain_started_timestamp_seconds",
	Help: "When this instance started draining (SIGTERM), as a Unix time; 0 while it serves normally.",
})

// sleepCtx waits for d or until ctx ends, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// doneWithin runs f and reports whether it returned within d; past d it
// returns false and leaves f running.
func doneWithin(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// drainingReadyz answers GET /readyz with 503 once draining is set, and
// passes everything else to h.
func drainingReadyz(h http.Handler, draining *atomic.Bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && draining.Load() {
			w.Header().Set("Connection", "close")
			httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "not-ready", "Not ready", "draining: this instance is stopping"))
			return
		}
		h.ServeHTTP(w, r)
	})
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
	return RunStop(ctx, log, addr, h, Stop{Grace: grace}, tasks...)
}

// RunStop is Run with the drain of stop (see Stop) when ctx ends.
func RunStop(ctx context.Context, log *slog.Logger, addr string, h http.Handler, stop Stop, tasks ...Task) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	drain := kafkax.NewDrain()
	var draining atomic.Bool
	taskCtx, stopTasks := context.WithCancel(kafkax.WithDrain(context.Background(), drain))
	defer stopTasks()
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	defer stopHTTP()
	go func() {
		select {
		case <-httpCtx.Done(): // a part failed: no drain
			return
		case <-ctx.Done():
		}
		draining.Store(true)
		drainStarted.SetToCurrentTime()
		log.Info("draining: /readyz fails from now on", "drain_grace", stop.DrainGrace, "drain_handover", stop.DrainHandover)
		if !sleepCtx(httpCtx, stop.DrainGrace) {
			return
		}
		if !stop.NoLeave {
			start := time.Now()
			lctx, cancel := context.WithTimeout(httpCtx, 15*time.Second)
			left := drain.Leave(lctx)
			cancel()
			if left > 0 {
				log.Warn("draining: some consumer groups were not left in time", "groups", left)
			}
			log.Info("draining: partitions handed over", "took", time.Since(start))
			sleepCtx(httpCtx, stop.DrainHandover)
		}
		stopHTTP()
	}()
	h = drainingReadyz(h, &draining)
	grace := stop.Grace

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
	var running atomic.Int32
	for i, task := range tasks {
		wg.Add(1)
		running.Add(1)
		go func() {
			defer wg.Done()
			defer running.Add(-1)
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
	if d := cmp.Or(stop.TaskStop, DefaultStopTimeout); !doneWithin(d, wg.Wait) {
		err := fmt.Errorf("%w (%s): %d of %d still running", ErrStopTimeout, d, running.Load(), len(tasks))
		log.Error("exiting without the background tasks that did not stop", "err", err)
		return errors.Join(firstErr, err)
	}
	return firstErr
}
