package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestExporting(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		on   bool
		err  bool
	}{
		{"nothing set: off", nil, false, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true, false},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, true, false},
		{"exporter otlp, default endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true, false},
		{"exporter none wins over an endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false, false},
		{"sdk disabled", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false, false},
		{"unsupported exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, true},
		{"grpc", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, false, true},
		{"traces protocol wins", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, true, false},
		{"protocol of an exporter that is off", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			on, err := Exporting(func(k string) string { return c.env[k] })
			if on != c.on || (err != nil) != c.err {
				t.Fatalf("Exporting = %v, %v; want %v, error %v", on, err, c.on, c.err)
			}
			if err != nil && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v is not ErrUnsupported", err)
			}
		})
	}
}

// clearOTEL unsets the OTEL_* variables this test process may have.
func clearOTEL(t *testing.T) {
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		t.Setenv(k, "")
	}
}

func TestSetupOffByDefault(t *testing.T) {
	clearOTEL(t)
	shutdown, err := Setup(context.Background(), Options{Service: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if Enabled() {
		t.Fatal("tracing is on with no OTEL_* variable set")
	}
	_, span := Tracer().Start(context.Background(), "x")
	defer span.End()
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Fatal("a span of the no-op provider records, or has an id")
	}
}

func TestSetupExportsOverOTLPHTTP(t *testing.T) {
	clearOTEL(t)
	var mu sync.Mutex
	var posts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		posts = append(posts, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	shutdown, err := Setup(context.Background(), Options{Service: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if !Enabled() {
		t.Fatal("tracing is off with OTEL_EXPORTER_OTLP_ENDPOINT set")
	}
	_, span := Tracer().Start(context.Background(), "x")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = Setup(context.Background(), Options{}) }) // back to off
	mu.Lock()
	defer mu.Unlock()
	if len(posts) == 0 || posts[0] != "POST /v1/traces application/x-protobuf" {
		t.Fatalf("the collector got %q; want the span POSTed to /v1/traces", posts)
	}
}

// recording switches tracing on with an in-memory recorder for the test.
func recording(t *testing.T) *tracetest.SpanRecorder {
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	enabled.Store(true)
	t.Cleanup(func() {
		enabled.Store(false)
		otel.SetTracerProvider(prev)
	})
	return rec
}

// hop is a server whose /api/item/{id} handler calls next (if set) with
// a Transport client, and records the traceparent it got.
func hop(t *testing.T, next string, got *string) *httptest.Server {
	r := mux.NewRouter()
	r.Use(Middleware)
	r.HandleFunc("/api/item/{id}", func(w http.ResponseWriter, r *http.Request) {
		*got = r.Header.Get("traceparent")
		if next != "" {
			req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, next+"/api/item/secret-id?email=a@b.c", nil)
			resp, err := (&http.Client{Transport: Transport(nil)}).Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		}
		w.WriteHeader(http.StatusTeapot)
	})
	r.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { *got = r.Header.Get("traceparent") })
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPSpansFormOneTrace(t *testing.T) {
	rec := recording(t)
	var gotB, gotA string
	b := hop(t, "", &gotB)
	a := hop(t, b.URL, &gotA)
	resp, err := http.Get(a.URL + "/api/item/secret-id?email=a@b.c")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	spans := rec.Ended()
	if len(spans) != 3 {
		t.Fatalf("%d spans; want 3 (a's server span, its client span, b's server span)", len(spans))
	}
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.SpanKind().String()+" "+s.Name()] = s
		if s.SpanContext().TraceID() != spans[0].SpanContext().TraceID() {
			t.Fatalf("span %q is in another trace", s.Name())
		}
		for _, kv := range s.Attributes() {
			if v := kv.Value.String(); strings.Contains(v, "secret-id") || strings.Contains(v, "a@b.c") {
				t.Errorf("span %q has %s=%q: a raw path or query", s.Name(), kv.Key, v)
			}
		}
	}
	serverA, client, serverB := byName["server GET /api/item/{id}"], byName["client GET /api/item/{id}"], byName["server GET /api/item/{id}"]
	if client == nil || serverA == nil {
		t.Fatalf("spans %v; want server and client spans named after the route template", byName)
	}
	for _, s := range spans {
		if s.SpanKind() == trace.SpanKindServer && s.Parent().SpanID() == client.SpanContext().SpanID() {
			serverB = s
		}
	}
	if serverB == nil || client.Parent().SpanID() != serverA.SpanContext().SpanID() {
		t.Fatal("the spans do not nest: a's server span > its client span > b's server span")
	}
	if !strings.Contains(gotB, serverA.SpanContext().TraceID().String()) {
		t.Fatalf("b got traceparent %q; want a's trace", gotB)
	}
}

func TestOffPassesAnIncomingTraceOnWithoutSpans(t *testing.T) {
	if Enabled() {
		t.Fatal("tracing is on")
	}
	var gotB, gotA string
	b := hop(t, "", &gotB)
	a := hop(t, b.URL, &gotA)
	get := func(tp string) {
		req, _ := http.NewRequest(http.MethodGet, a.URL+"/api/item/1", nil)
		if tp != "" {
			req.Header.Set("traceparent", tp)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	get(tp)
	if gotB != tp {
		t.Fatalf("b got traceparent %q; want the incoming %q passed on", gotB, tp)
	}
	get("")
	if gotB != "" {
		t.Fatalf("b got traceparent %q from a request outside any trace", gotB)
	}
}

func TestUntracedRoutes(t *testing.T) {
	rec := recording(t)
	var got string
	a := hop(t, "", &got)
	resp, err := http.Get(a.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("/healthz made %d spans; want none", n)
	}
}

func TestLogHandlerAddsTraceAndSpanID(t *testing.T) {
	rec := recording(t)
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "x")
	ctx, span := Tracer().Start(context.Background(), "op")
	log.InfoContext(ctx, "inside")
	span.End()
	log.Info("outside")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	var in, out map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &in)
	_ = json.Unmarshal([]byte(lines[1]), &out)
	sc := rec.Ended()[0].SpanContext()
	if in["trace_id"] != sc.TraceID().String() || in["span_id"] != sc.SpanID().String() || in["service"] != "x" {
		t.Fatalf("line within the span: %s; want trace_id %s, span_id %s", lines[0], sc.TraceID(), sc.SpanID())
	}
	if _, ok := out["trace_id"]; ok {
		t.Fatalf("line outside any span has a trace_id: %s", lines[1])
	}
}

// With tracing off, a request without a traceparent costs Middleware and
// Transport no allocation of their own: the hot path of an untraced
// system.
func TestOffCostsNoAllocation(t *testing.T) {
	if Enabled() {
		t.Fatal("tracing is on")
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	router := func(traced bool) http.Handler {
		r := mux.NewRouter()
		if traced {
			r.Use(Middleware)
		}
		r.Handle("/api/item/{id}", h)
		return r
	}
	req := httptest.NewRequest(http.MethodGet, "/api/item/1", nil)
	w := httptest.NewRecorder()
	bareRouter, tracedRouter := router(false), router(true)
	bare := testing.AllocsPerRun(200, func() { bareRouter.ServeHTTP(w, req) })
	traced := testing.AllocsPerRun(200, func() { tracedRouter.ServeHTTP(w, req) })
	// mux wraps the handler in every middleware at every request: that
	// closure is the one allocation any middleware costs.
	if traced > bare+1 {
		t.Errorf("Middleware with tracing off: %v allocations a request; %v without it, +1 for mux's wrapping", traced, bare)
	}

	rt := Transport(roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, nil }))
	out := httptest.NewRequest(http.MethodGet, "http://peer/api/item/1", nil)
	if n := testing.AllocsPerRun(200, func() { _, _ = rt.RoundTrip(out) }); n != 0 {
		t.Errorf("Transport outside a trace: %v allocations a request; want 0", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A route without a path template (httpx.Path's, which match without a
// regexp) is traced under its name, its template.
func TestNamedRouteIsTracedByItsName(t *testing.T) {
	rec := recording(t)
	r := mux.NewRouter()
	r.Use(Middleware)
	r.MatcherFunc(func(req *http.Request, _ *mux.RouteMatch) bool { return strings.HasPrefix(req.URL.Path, "/api/thing/") }).
		Name("/api/thing/{id}").HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/api/thing/7", nil))
	spans := rec.Ended()
	if len(spans) != 1 || spans[0].Name() != "GET /api/thing/{id}" {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name())
		}
		t.Fatalf("spans %q; want one, GET /api/thing/{id}", names)
	}
}
