package tracing

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// routeKey is the context key of the route template a request is for.
type routeKey struct{}

// WithRoute returns ctx naming route, a route template such as
// /api/profile/{uid}, as what the requests sent with ctx are for: the
// client spans of Transport are named after it. Middleware sets it to the
// route of the request it serves, so a forward is named after the route
// it forwards.
func WithRoute(ctx context.Context, route string) context.Context {
	return context.WithValue(ctx, routeKey{}, route)
}

// routeOf returns the route template of ctx (see WithRoute), or "".
func routeOf(ctx context.Context) string {
	s, _ := ctx.Value(routeKey{}).(string)
	return s
}

// Traced reports whether the route template is one that Middleware
// traces: the API (/api/), the calls between instances (/internal/) and
// the admin calls (/admin/). Health, readiness, metrics, the routing
// table and the debug pages are polled all the time, and traced never.
func Traced(route string) bool {
	return strings.HasPrefix(route, "/api/") || strings.HasPrefix(route, "/internal/") || strings.HasPrefix(route, "/admin/")
}

// Middleware is the mux middleware (install it with router.Use, before
// the access log, so that the route is known and the log line has the
// span) that gives each request of a Traced route a server span, a child
// of the trace context the request carries (traceparent), named
// "METHOD route-template", with http.request.method, http.route and
// http.response.status_code; a 5xx marks it failed. The span is in the
// request's context, and so is the route (WithRoute).
//
// With tracing off (Enabled), no span is started: a request that carries
// a trace context has it in its context, to pass on, and one that carries
// none passes through untouched, at the cost of a route lookup and a
// header lookup, with no allocation of its own (TestOffCostsNoAllocation).
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := ""
		if cr := mux.CurrentRoute(r); cr != nil {
			var err error
			if route, err = cr.GetPathTemplate(); err != nil {
				route = cr.GetName() // httpx.Path's routes are named by their template
			}
		}
		if !Traced(route) {
			next.ServeHTTP(w, r)
			return
		}
		if !Enabled() {
			if _, ok := r.Header["Traceparent"]; ok { // canonical: no allocation when absent
				r = r.WithContext(Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
			}
			next.ServeHTTP(w, r)
			return
		}
		ctx := Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := Tracer().Start(WithRoute(ctx, route), r.Method+" "+route,
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				attribute.String("http.request.method", r.Method),
				attribute.String("http.route", route),
			))
		defer span.End()
		rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r.WithContext(ctx))
		span.SetAttributes(attribute.Int("http.response.status_code", rec.status))
		if rec.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(rec.status))
		}
	})
}

// SetRoute renames the server span of ctx (Middleware's) after route, a
// finer template than the router's (the front door serves every /api/
// path with one route), and names ctx's requests after it (WithRoute).
func SetRoute(ctx context.Context, method, route string) context.Context {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetName(method + " " + route)
		span.SetAttributes(attribute.String("http.route", route))
	}
	return WithRoute(ctx, route)
}

// statusWriter remembers the status code written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (a
// stream's flushes and deadlines).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Transport returns base (http.DefaultTransport if nil) giving each
// request sent within a trace (a context with a valid span context) a
// client span, "METHOD route" after the context's route (WithRoute) or
// "METHOD", with http.request.method, server.address, server.port and
// http.response.status_code, from the sending to the response's header;
// and the trace context in its traceparent header, over whatever the
// request had. Requests sent outside a trace (background polls) are sent
// as they are, with no span.
//
// With tracing off, a request within a trace that came in still carries
// it on (traceparent), with no span of its own.
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return transport{base}
}

type transport struct{ base http.RoundTripper }

// CloseIdleConnections closes the idle connections of the base transport,
// if it keeps any (http.Client.CloseIdleConnections).
func (t transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func (t transport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return t.base.RoundTrip(r)
	}
	var span trace.Span
	if Enabled() {
		name := r.Method
		if route := routeOf(ctx); route != "" {
			name += " " + route
		}
		attrs := []attribute.KeyValue{attribute.String("http.request.method", r.Method)}
		if host, port, err := net.SplitHostPort(r.URL.Host); err == nil {
			attrs = append(attrs, attribute.String("server.address", host))
			if n, err := strconv.Atoi(port); err == nil {
				attrs = append(attrs, attribute.Int("server.port", n))
			}
		} else {
			attrs = append(attrs, attribute.String("server.address", r.URL.Host))
		}
		ctx, span = Tracer().Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
		defer span.End()
	}
	// A RoundTripper must not change the request it was given.
	out := r.Clone(ctx)
	Propagator.Inject(ctx, propagation.HeaderCarrier(out.Header))
	resp, err := t.base.RoundTrip(out)
	if span != nil {
		switch {
		case err != nil:
			span.RecordError(err)
			span.SetStatus(codes.Error, "request failed")
		default:
			span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
			if resp.StatusCode >= 400 {
				span.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
			}
		}
	}
	return resp, err
}
