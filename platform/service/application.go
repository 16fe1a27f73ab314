package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"profiles/platform/httpx"
	"profiles/platform/observe"
	"profiles/platform/tracing"
)

// Application is what a service's composition root hands its main: the
// HTTP handler and the background tasks, wired and ready to Run. What they
// hold is released by Boot.Close after Run returns (a root adds it with
// Boot.Defer).
type Application struct {
	Log *slog.Logger
	// Addr is the HTTP listen address; Grace bounds the requests in
	// flight at shutdown (see Run).
	Addr  string
	Grace time.Duration
	// DrainGrace and DrainHandover time the drain at a stop (see Stop).
	DrainGrace, DrainHandover time.Duration
	// NoLeave keeps the consumer groups at a stop (see Stop).
	NoLeave bool
	// StopTimeout bounds the tasks' stop (Stop.TaskStop).
	StopTimeout time.Duration
	// PprofAddr, if set, is where net/http/pprof is served, on a listener
	// of its own (PPROF_ADDR), for as long as Run runs.
	PprofAddr string
	// Handler serves HTTP; Tasks run beside it, in this order (a task's
	// failure is logged with its index).
	Handler http.Handler
	Tasks   []Task
	// Starting are the attributes of the "starting" line that Run logs
	// first.
	Starting []any
}

// Application returns an Application of h and tasks on f's HTTP address
// and shutdown grace. Set its Starting before Run.
func (f *Flags) Application(log *slog.Logger, h http.Handler, tasks ...Task) *Application {
	return &Application{Log: log, Addr: *f.HTTPAddr, Grace: *f.ShutdownGrace,
		DrainGrace: *f.DrainGrace, DrainHandover: *f.DrainHandover, NoLeave: !*f.DrainLeave, StopTimeout: *f.StopTimeout, PprofAddr: *f.PprofAddr, Handler: h, Tasks: tasks}
}

// Run logs "starting" with a.Starting and runs a (see Run) until ctx ends
// or a part stops.
func (a *Application) Run(ctx context.Context) error {
	a.Log.Info("starting", a.Starting...)
	if a.PprofAddr != "" {
		stop, _, err := servePprof(a.Log, a.PprofAddr)
		if err != nil {
			return err
		}
		defer stop()
	}
	return RunStop(ctx, a.Log, a.Addr, a.Handler, Stop{NoLeave: a.NoLeave, Grace: a.Grace, DrainGrace: a.DrainGrace, DrainHandover: a.DrainHandover, TaskStop: a.StopTimeout}, a.Tasks...)
}

// Start is the start-up and shut-down that every binary shares. It sets
// up tracing from the OTEL_* variables (tracing.Setup, with name as the
// service name), makes name's Boot (NewBoot with kafka; without Kafka
// settings, a Boot of only Name and Log), calls f with it and a context
// that ends at SIGINT or SIGTERM, and then closes the Boot (Boot.Close),
// stops listening for the signals and flushes the spans still queued (for
// up to TracingFlush), in that order. When f returns ErrStopTimeout the
// Boot is left open: its tasks still use it. The Boot's close is given up
// after its StopTimeout, with ErrStopTimeout.
func Start(name string, log *slog.Logger, kafka *KafkaFlags, f func(ctx context.Context, boot *Boot) error) error {
	observe.RegisterBuildInfo(name)
	b := observe.BuildInfo()
	log.Info("build", "version", b.Version, "revision", b.Revision, "modified", b.Modified, "go", b.GoVersion)
	flush, err := tracing.Setup(context.Background(), tracing.Options{Service: name})
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	if tracing.Enabled() {
		log.Info("tracing on: spans are exported over OTLP/HTTP")
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), TracingFlush)
		defer cancel()
		if err := flush(ctx); err != nil {
			log.Warn("tracing: spans not flushed at stop", "err", err)
		}
	}()
	boot := &Boot{Name: name, Log: log}
	if kafka != nil {
		var err error
		if boot, err = NewBoot(name, log, kafka); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = f(ctx, boot)
	if errors.Is(err, ErrStopTimeout) {
		// What the Boot holds is in use by the tasks that did not stop:
		// closing it would wait for them. The stores recover from their
		// write-ahead logs at the next start.
		log.Warn("exiting without closing the stores and Kafka clients")
		return err
	}
	if d := cmp.Or(boot.StopTimeout, DefaultStopTimeout); !doneWithin(d, boot.Close) {
		// The same: an exit before the close ended.
		log.Warn("exiting before the stores and Kafka clients closed", "stop_timeout", d)
		err = errors.Join(err, fmt.Errorf("%w (%s): closing the stores and Kafka clients", ErrStopTimeout, d))
	}
	return err
}

// TracingFlush bounds the flush of the spans still queued at a stop (see
// Start): an unreachable collector costs a stop no more than this.
const TracingFlush = 5 * time.Second

// Serve is Start for a service: with the logger of common, it wires the
// service with wire (its composition root) and runs the Application.
//
// With -version it prints the build (observe.Build.String) and returns.
// With -healthcheck it probes the instance on HTTP_ADDR (Healthcheck) and
// returns the result, before any key is loaded or broker dialled.
func Serve(name string, common *Flags, kafka *KafkaFlags, wire func(ctx context.Context, boot *Boot) (*Application, error)) error {
	if common.Version != nil && *common.Version {
		fmt.Println(observe.BuildInfo().String(name))
		return nil
	}
	if common.Healthcheck != nil && *common.Healthcheck {
		return Healthcheck(context.Background(), *common.HTTPAddr, HealthcheckTimeout)
	}
	if common.AccessLog != nil {
		a, err := httpx.ParseAccessLog(*common.AccessLog)
		if err != nil {
			return err
		}
		common.access = a
	}
	return Start(name, common.Logger(name), kafka, func(ctx context.Context, boot *Boot) error {
		boot.StopTimeout = *common.StopTimeout
		app, err := wire(ctx, boot)
		if err != nil {
			return err
		}
		return app.Run(ctx)
	})
}

// Exit ends a binary that failed with err: it prints "name: err" to
// standard error and exits with status 1. With a nil err it returns.
func Exit(name string, err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}
