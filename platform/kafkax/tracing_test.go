package kafkax

import (
	"context"
	"testing"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/trace"
)

// consumed is m as a consumer reads it back.
func consumed(m *sarama.ProducerMessage) *sarama.ConsumerMessage {
	c := &sarama.ConsumerMessage{Topic: m.Topic, Partition: 3, Offset: 42}
	for i := range m.Headers {
		c.Headers = append(c.Headers, &m.Headers[i])
	}
	return c
}

func remote(t *testing.T, traceID, spanID string) context.Context {
	tid, err := trace.TraceIDFromHex(traceID)
	if err != nil {
		t.Fatal(err)
	}
	sid, err := trace.SpanIDFromHex(spanID)
	if err != nil {
		t.Fatal(err)
	}
	return trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true}))
}

func TestTraceHeadersRoundTrip(t *testing.T) {
	ctx := remote(t, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
	m := &sarama.ProducerMessage{Topic: "profile-events", Headers: []sarama.RecordHeader{
		{Key: []byte("ce_type"), Value: []byte("ProfileCreated")},
		{Key: []byte("traceparent"), Value: []byte("00-11111111111111111111111111111111-2222222222222222-01")},
	}}
	InjectTrace(ctx, []*sarama.ProducerMessage{m})
	if len(m.Headers) != 2 {
		t.Fatalf("headers %q: want the old traceparent replaced, the ce_ header kept", m.Headers)
	}
	if got := (ProducerHeaders{&m.Headers}).Get("traceparent"); got != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Fatalf("traceparent %q", got)
	}
	sc := trace.SpanContextFromContext(RecordTrace(context.Background(), consumed(m)))
	if !sc.IsValid() || !sc.IsRemote() || sc.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || sc.SpanID().String() != "b7ad6b7169203331" || !sc.IsSampled() {
		t.Fatalf("extracted %v; want the injected span context", sc)
	}
	// With tracing off, processing the record still carries its trace on.
	pctx, span := StartProcess(context.Background(), consumed(m))
	if span.IsRecording() || trace.SpanContextFromContext(pctx).TraceID() != sc.TraceID() {
		t.Fatal("StartProcess with tracing off: want the record's trace in the context and no span")
	}
	var h []sarama.RecordHeader
	InjectTraceHeaders(pctx, &h)
	if got := (ProducerHeaders{&h}).Get("traceparent"); got != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Fatalf("the next record's traceparent %q; want the consumed record's", got)
	}
}

func TestNoTraceNoHeaders(t *testing.T) {
	m := &sarama.ProducerMessage{Topic: "t"}
	InjectTrace(context.Background(), []*sarama.ProducerMessage{m})
	if len(m.Headers) != 0 {
		t.Fatalf("headers %q without a trace", m.Headers)
	}
	if sc := trace.SpanContextFromContext(RecordTrace(context.Background(), consumed(m))); sc.IsValid() {
		t.Fatal("a record without headers has a trace context")
	}
	if s := StartProcessSpans(context.Background(), []*sarama.ConsumerMessage{consumed(m)}); len(s.spans) != 0 {
		t.Fatal("spans with tracing off")
	}
}

// With tracing off, the Kafka helpers cost a record without a trace
// context no allocation: the hot path of the projector and query-svc.
func TestTracingOffCostsNoAllocation(t *testing.T) {
	ctx := context.Background()
	rec := &sarama.ConsumerMessage{Topic: "profile-events", Headers: []*sarama.RecordHeader{
		{Key: []byte("ce_id"), Value: []byte("x")}, {Key: []byte("ce_type"), Value: []byte("ProfileCreated")}}}
	recs := []*sarama.ConsumerMessage{rec, rec}
	msgs := []*sarama.ProducerMessage{{Topic: "profile-events"}}
	var headers []sarama.RecordHeader
	for name, f := range map[string]func(){
		"StartProcess":       func() { _, span := StartProcess(ctx, rec); EndSpan(span, nil) },
		"StartProcessSpans":  func() { StartProcessSpans(ctx, recs).End(nil) },
		"StartSend":          func() { _, span := StartSend(ctx, "profile-events", 1, 1); EndSpan(span, nil) },
		"InjectTrace":        func() { InjectTrace(ctx, msgs) },
		"InjectTraceHeaders": func() { InjectTraceHeaders(ctx, &headers) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s with tracing off: %v allocations; want 0", name, n)
		}
	}
}
