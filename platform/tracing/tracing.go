// Package tracing is the OpenTelemetry tracing of every profiles binary:
// the tracer provider from the standard OTEL_* variables (Setup), the W3C
// propagator (Propagator), server spans for HTTP routes (Middleware),
// client spans for the requests instances send (Transport), and the slog
// handler that puts trace_id and span_id on log lines (LogHandler). The
// Kafka side (record headers, produce and process spans) is in kafkax.
//
// Tracing is off unless the environment switches it on (see Setup). Off,
// no exporter runs and no span is recorded: Middleware, Transport and the
// Kafka helpers only pass on a trace context that came with a request or
// a record (a traceparent header), and cost a header lookup otherwise.
//
// Attribute policy: span names and attributes hold route templates
// (/api/profile/{uid}), methods, status codes, topics, partitions and
// offsets; never a raw path, a query string (a search's email), a body, a
// record key or value, or any other personal data.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Propagator carries the trace context in W3C traceparent and tracestate
// headers, and baggage in the W3C baggage header, over HTTP and in Kafka
// record headers. It is used whether or not Setup switched tracing on, so
// that a trace that comes in goes on through a binary that records none.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// instrumentation is the name of this project's tracers.
const instrumentation = "profiles"

// Tracer returns the tracer of the profiles instrumentation, from the
// global tracer provider that Setup installs.
func Tracer() trace.Tracer { return otel.Tracer(instrumentation) }

// enabled is whether Setup installed a recording tracer provider.
var enabled atomic.Bool

// Enabled reports whether spans are recorded and exported (Setup found an
// exporter to run). Hot paths check it before they build a span's
// attributes.
func Enabled() bool { return enabled.Load() }

// ErrUnsupported is the error of Setup for an OTEL_* setting this build
// does not implement (an exporter other than otlp, a protocol other than
// http/protobuf).
var ErrUnsupported = errors.New("unsupported tracing setting")

// Options are what Setup needs besides the environment.
type Options struct {
	// Service is the default service.name; OTEL_SERVICE_NAME and
	// OTEL_RESOURCE_ATTRIBUTES override it.
	Service string
}

// Exporting reports whether env switches the OTLP exporter on, by the
// standard variables:
//
//   - OTEL_SDK_DISABLED=true: off.
//   - OTEL_TRACES_EXPORTER=none: off; =otlp: on (to
//     http://localhost:4318 unless an endpoint is set). Any other exporter
//     is ErrUnsupported.
//   - OTEL_TRACES_EXPORTER unset: on when OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, off otherwise. (The
//     OpenTelemetry default would be otlp: this project exports nothing
//     until it is told where to.)
//
// The protocol (OTEL_EXPORTER_OTLP_PROTOCOL,
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) must be http/protobuf, the default.
func Exporting(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	on := false
	if v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); v != "" {
		for _, e := range strings.Split(v, ",") {
			switch e = strings.ToLower(strings.TrimSpace(e)); e {
			case "none":
				return false, nil
			case "otlp":
				on = true
			default:
				return false, fmt.Errorf("%w: OTEL_TRACES_EXPORTER %q: only otlp or none", ErrUnsupported, e)
			}
		}
	} else {
		on = getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	}
	if !on {
		return false, nil
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := strings.TrimSpace(getenv(k)); p != "" {
			if p != "http/protobuf" {
				return false, fmt.Errorf("%w: %s %q: only http/protobuf", ErrUnsupported, k, p)
			}
			break // the traces setting wins over the general one
		}
	}
	return true, nil
}

// Setup installs the global propagator (Propagator) and, when the
// environment switches the exporter on (Exporting), a tracer provider that
// batches spans to an OTLP/HTTP exporter. It returns the function that
// flushes the spans still queued and stops the exporter: call it at the
// end of a graceful stop, with a deadline.
//
// Everything else comes from the standard variables, read by the
// OpenTelemetry SDK itself: the endpoint, headers, timeout, compression
// and TLS files (OTEL_EXPORTER_OTLP_*), the sampler (OTEL_TRACES_SAMPLER,
// OTEL_TRACES_SAMPLER_ARG; the default follows the caller's sampling
// decision and samples every new trace), the resource
// (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) and the batching
// (OTEL_BSP_*).
//
// Off, the tracer provider is the no-op one: starting a span costs no
// allocation beyond its context, and nothing is exported.
func Setup(ctx context.Context, o Options) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(Propagator)
	on, err := Exporting(os.Getenv)
	if err != nil || !on {
		enabled.Store(false)
		otel.SetTracerProvider(noop.NewTracerProvider())
		return func(context.Context) error { return nil }, err
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", o.Service)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // last: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		slog.Warn("tracing", "err", err)
	}))
	enabled.Store(true)
	return func(ctx context.Context) error {
		enabled.Store(false)
		return tp.Shutdown(ctx)
	}, nil
}
