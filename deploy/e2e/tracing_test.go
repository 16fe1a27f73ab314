package e2e

import (
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"profiles/platform/peer"
)

// otlpSpan is one span as an OTLP receiver got it.
type otlpSpan struct {
	Service, Name, Kind       string
	TraceID, SpanID, ParentID string
	Attrs                     map[string]string
}

func (s otlpSpan) String() string {
	return fmt.Sprintf("%s %s %q span=%s parent=%s %v", s.Service, s.Kind, s.Name, s.SpanID, s.ParentID, s.Attrs)
}

// spanSource is where the test reads the spans the services exported:
// the collector's file, or the receiver inside the test.
type spanSource interface {
	// trace returns the spans received so far of the trace traceID.
	trace(traceID string) []otlpSpan
}

// startCollector starts an OpenTelemetry Collector (deploy/otelcol, built
// into .cache/bin/otelcol-e2e by make test, or PROFILES_OTELCOL) with the
// otlp receiver on an OTLP/HTTP port of the test and the file exporter,
// and returns the endpoint to export to and the spans it wrote. Without
// the binary, CI fails; elsewhere the test runs against the receiver
// inside the test (otlpReceiver), and says so.
func startCollector(t *testing.T) (endpoint string, spans spanSource) {
	t.Helper()
	bin := os.Getenv("PROFILES_OTELCOL")
	if bin == "" {
		bin, _ = filepath.Abs("../../.cache/bin/otelcol-e2e")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the OpenTelemetry Collector is not built (make .cache/bin/otelcol-e2e): %v", err)
		}
		t.Logf("NOTE: no OpenTelemetry Collector at %s (make .cache/bin/otelcol-e2e): the spans go to a receiver inside the test", bin)
		rcv := startOTLPReceiver(t)
		return rcv.URL, rcv
	}
	dir := t.TempDir()
	port := freePort(t)
	out := filepath.Join(dir, "traces.jsonl")
	config := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%d
exporters:
  file:
    path: %s
    format: json
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
`, port, out)
	cfg := filepath.Join(dir, "otelcol.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "otelcol.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", "file:"+cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithTest(cmd, 0)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the collector: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "otelcol.log"))
			t.Logf("---- the collector's log ----\n%s", b)
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "otelcol.log"))
			t.Fatalf("the collector exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector does not listen on %s", addr)
		}
	}
	t.Logf("OpenTelemetry Collector %s: OTLP/HTTP on %s, spans to %s", bin, addr, out)
	return "http://" + addr, collectorFile(out)
}

// collectorFile is the file the collector's file exporter writes: one
// OTLP/JSON export request a line.
type collectorFile string

// otlpJSON is the part of an OTLP/JSON export request the test reads.
type otlpJSON struct {
	ResourceSpans []struct {
		Resource struct {
			Attributes []otlpJSONAttr `json:"attributes"`
		} `json:"resource"`
		ScopeSpans []struct {
			Spans []struct {
				TraceID      string         `json:"traceId"`
				SpanID       string         `json:"spanId"`
				ParentSpanID string         `json:"parentSpanId"`
				Name         string         `json:"name"`
				Kind         int            `json:"kind"`
				Attributes   []otlpJSONAttr `json:"attributes"`
			} `json:"spans"`
		} `json:"scopeSpans"`
	} `json:"resourceSpans"`
}

type otlpJSONAttr struct {
	Key   string `json:"key"`
	Value struct {
		StringValue *string `json:"stringValue"`
		IntValue    *string `json:"intValue"` // an int64 is a string in OTLP/JSON
	} `json:"value"`
}

func (a otlpJSONAttr) String() string {
	switch {
	case a.Value.StringValue != nil:
		return *a.Value.StringValue
	case a.Value.IntValue != nil:
		return *a.Value.IntValue
	}
	return ""
}

// The span kinds of OTLP, by their number.
var otlpKinds = map[int]string{1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}

func (f collectorFile) trace(traceID string) []otlpSpan {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return nil
	}
	var out []otlpSpan
	for _, line := range strings.Split(string(b), "\n") {
		var req otlpJSON
		if strings.TrimSpace(line) == "" || json.Unmarshal([]byte(line), &req) != nil {
			continue // a line still being written
		}
		for _, rs := range req.ResourceSpans {
			service := ""
			for _, a := range rs.Resource.Attributes {
				if a.Key == "service.name" {
					service = a.String()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					if sp.TraceID != traceID {
						continue
					}
					attrs := map[string]string{}
					for _, a := range sp.Attributes {
						attrs[a.Key] = a.String()
					}
					out = append(out, otlpSpan{Service: service, Name: sp.Name, Kind: otlpKinds[sp.Kind],
						TraceID: sp.TraceID, SpanID: sp.SpanID, ParentID: sp.ParentSpanID, Attrs: attrs})
				}
			}
		}
	}
	return out
}

// otlpReceiver is an OTLP/HTTP trace receiver (POST /v1/traces, binary
// protobuf, plain or gzip), decoding each export request with the
// OpenTelemetry protocol's own Go types: the stand-in for the collector
// where it is not built (see startCollector).
type otlpReceiver struct {
	URL   string
	mu    sync.Mutex
	spans []otlpSpan
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	rcv := &otlpReceiver{URL: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(rcv.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return rcv
}

func (rcv *otlpReceiver) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want POST /v1/traces of application/x-protobuf", http.StatusUnsupportedMediaType)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var got []otlpSpan
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				attrs := map[string]string{}
				for _, kv := range sp.GetAttributes() {
					v := kv.GetValue()
					switch {
					case v.GetStringValue() != "":
						attrs[kv.GetKey()] = v.GetStringValue()
					default:
						attrs[kv.GetKey()] = fmt.Sprint(v.GetIntValue())
					}
				}
				got = append(got, otlpSpan{
					Service: service, Name: sp.GetName(),
					Kind:    strings.ToLower(strings.TrimPrefix(sp.GetKind().String(), "SPAN_KIND_")),
					TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()),
					ParentID: hex.EncodeToString(sp.GetParentSpanId()), Attrs: attrs,
				})
			}
		}
	}
	rcv.mu.Lock()
	rcv.spans = append(rcv.spans, got...)
	rcv.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (rcv *otlpReceiver) trace(traceID string) []otlpSpan {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	var out []otlpSpan
	for _, s := range rcv.spans {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// One POST through the front door is one trace, over every hop of the
// write: the front door, the command-svc instance that took the request
// and the forward to the owner (when there is one), the owner, the append
// of the event to Kafka, the projector's processing of that event (the
// trace travels in the record's headers), query-svc's apply of the
// snapshot the projector wrote, and the read-your-writes wait, which asks
// query-svc to wait for the new version.
//
// The services export with their real OTLP/HTTP exporters, switched on
// by OTEL_EXPORTER_OTLP_ENDPOINT alone, to a real OpenTelemetry Collector
// (its otlp receiver; the test reads what its file exporter writes), see
// startCollector.
//
// The client sends its own traceparent, so the trace is the client's:
// every span the write causes must carry its trace id, and the front
// door's span is a child of the client's span.
func TestOnePOSTIsOneTrace(t *testing.T) {
	endpoint, rcv := startCollector(t)
	s := StartSystem(t, Options{Command: 2, Query: 2, Env: map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
		"OTEL_BSP_SCHEDULE_DELAY":     "100", // ms: export soon, not every 5 s
		"OTEL_TRACES_SAMPLER":         "parentbased_always_on",
	}})
	eventsTopic, snapshotsTopic := s.env["EVENTS_TOPIC"], s.env["SNAPSHOTS_TOPIC"]

	// POST until one takes a hop between command-svc instances (POSTs
	// are spread over them, and about half are not on their owner), so
	// that the forward is part of the trace checked; at most 12.
	var (
		traceID, clientSpan, uid, email string
		hops                            string
	)
	for i := range 12 {
		traceID, clientSpan = fmt.Sprintf("%032x", 0xabc0000+i+1), "00f067aa0ba902b7"
		email = fmt.Sprintf("tracy%d-%d@mail.com", i, time.Now().UnixNano()%1e6)
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "tracy", "email": email},
			map[string]string{"traceparent": "00-" + traceID + "-" + clientSpan + "-01"})
		if r.Status != http.StatusCreated {
			t.Fatalf("POST = %d %s", r.Status, r.Body)
		}
		var p profile
		r.JSON(t, &p)
		uid, hops = p.UID, r.Header.Get("X-Profiles-Hops")
		if hops == "1" {
			break
		}
	}
	t.Logf("trace %s: uid %s, hops %s", traceID, uid, hops)

	// What the trace must hold, each a span found by its service, kind
	// and name, and how it hangs together.
	type want struct {
		what                string
		service, kind, name string
	}
	wants := []want{
		{"front door server span", "frontdoor", "server", "POST /api/profile"},
		{"front door's request to command-svc", "frontdoor", "client", "POST /api/profile"},
		{"command-svc server span", "command-svc", "server", "POST /api/profile"},
		{"append of the event to Kafka", "command-svc", "producer", "send " + eventsTopic},
		{"read-your-writes wait", "command-svc", "internal", "wait visible"},
		// A POST's uid and email share a partition, so its wait is one
		// request of peer.RouteVisible.
		{"the wait's request to query-svc", "command-svc", "client", "GET " + peer.RouteVisible},
		{"query-svc serving the wait", "query-svc", "server", "GET " + peer.RouteVisible},
		{"projector processing the event", "projector", "consumer", "process " + eventsTopic},
		{"query-svc applying the snapshot", "query-svc", "consumer", "process " + snapshotsTopic},
	}
	if hops == "1" {
		wants = append(wants, want{"the forward to the owner", "command-svc", "client", "POST /api/profile"})
	}
	find := func(spans []otlpSpan, w want) []otlpSpan {
		var out []otlpSpan
		for _, sp := range spans {
			if sp.Service == w.service && sp.Kind == w.kind && sp.Name == w.name {
				out = append(out, sp)
			}
		}
		return out
	}
	var spans []otlpSpan
	deadline := time.Now().Add(30 * time.Second)
	for {
		spans = rcv.trace(traceID)
		missing := []string{}
		for _, w := range wants {
			if len(find(spans, w)) == 0 {
				missing = append(missing, w.what)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, sp := range spans {
				t.Log(sp)
			}
			t.Fatalf("the trace of the POST (%d spans above) lacks: %s", len(spans), strings.Join(missing, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}

	byID := map[string]otlpSpan{}
	for _, sp := range spans {
		byID[sp.SpanID] = sp
	}
	// ancestor reports whether a is sp or one of sp's ancestors.
	ancestor := func(a, sp otlpSpan) bool {
		for range len(spans) + 1 {
			if sp.SpanID == a.SpanID {
				return true
			}
			p, ok := byID[sp.ParentID]
			if !ok {
				return false
			}
			sp = p
		}
		return false
	}
	fronts := find(spans, wants[0])
	if len(fronts) != 1 {
		t.Fatalf("%d front door server spans; want 1", len(fronts))
	}
	front := fronts[0]
	if front.ParentID != clientSpan {
		t.Errorf("the front door's span has parent %s; want the client's span %s", front.ParentID, clientSpan)
	}
	// The projector's span is the child of the producer span (through the
	// record's headers). An append or a fold tried again would add spans
	// of its own, so the test looks for the pair, not for one of each.
	var producer, projected otlpSpan
	for _, pr := range find(spans, wants[7]) {
		for _, p := range find(spans, wants[3]) {
			if pr.ParentID == p.SpanID {
				producer, projected = p, pr
			}
		}
	}
	if projected.SpanID == "" {
		for _, sp := range spans {
			t.Log(sp)
		}
		t.Fatal("no projector span is the child of a producer span: the trace context did not travel in the event's headers")
	}
	if producer.Attrs["messaging.system"] != "kafka" || producer.Attrs["messaging.destination.name"] != eventsTopic {
		t.Errorf("producer span attributes %v", producer.Attrs)
	}
	if projected.Attrs["messaging.kafka.offset"] == "" || projected.Attrs["messaging.destination.partition.id"] == "" {
		t.Errorf("the projector's span lacks the record's partition and offset: %v", projected.Attrs)
	}
	// query-svc applies the snapshot the projector wrote for this event;
	// one of its apply spans is the child of the projector's span.
	applied := false
	for _, sp := range find(spans, wants[8]) {
		applied = applied || sp.ParentID == projected.SpanID
	}
	if !applied {
		t.Errorf("no query-svc apply span is a child of the projector's span %s", projected.SpanID)
	}
	// Every HTTP and Kafka span of the write descends from the front
	// door's span: the owner's server span, the append, the wait and
	// query-svc's GET.
	for _, w := range append(wants[1:7], wants[9:]...) {
		for _, sp := range find(spans, w) {
			if !ancestor(front, sp) {
				t.Errorf("%s (%s) does not descend from the front door's span", w.what, sp)
			}
		}
	}
	// The append is made by the owner: under a command-svc server span
	// whose parent is a client span (the front door's, or the forward's).
	owner, ok := byID[producer.ParentID]
	for ok && owner.Kind != "server" {
		owner, ok = byID[owner.ParentID]
	}
	if !ok || owner.Service != "command-svc" || byID[owner.ParentID].Kind != "client" {
		t.Errorf("the append is not under a command-svc server span called by a client span: %v", owner)
	}
	if hops == "1" {
		if fwd := byID[owner.ParentID]; fwd.Service != "command-svc" {
			t.Errorf("the POST took a hop, but the owner was called by %s, not by the forward of command-svc", fwd)
		}
	}
	// No span holds personal data or a raw path.
	for _, sp := range spans {
		for k, v := range sp.Attrs {
			if strings.Contains(v, email) || strings.Contains(v, uid) || strings.Contains(sp.Name, uid) {
				t.Errorf("span %q has %s=%q: personal data or a raw path", sp.Name, k, v)
			}
		}
	}
	// The owner's log lines of the request carry the trace id.
	found := false
	for _, name := range s.Instances("command-svc") {
		b, _ := os.ReadFile(s.procs[name].log)
		found = found || strings.Contains(string(b), `"trace_id":"`+traceID+`","span_id":"`)
	}
	if !found {
		t.Errorf("no command-svc log line carries trace_id %s with a span_id", traceID)
	}
}
