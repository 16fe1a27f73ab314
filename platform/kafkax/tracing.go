package kafkax

import (
	"context"
	"strconv"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"profiles/platform/tracing"
)

// The trace context travels in record headers, under the W3C names
// (traceparent, tracestate, baggage: tracing.Propagator), next to the
// CloudEvents ce_* headers. Spans follow the OpenTelemetry messaging
// conventions: "send <topic>" (producer) and "process <topic>" (consumer)
// with messaging.system=kafka, messaging.operation.type,
// messaging.destination.name, messaging.destination.partition.id and, on
// a processed record, messaging.kafka.offset. No key or value of a record
// goes into a span.

// ProducerHeaders is a propagation.TextMapCarrier over the headers of a
// record to produce. Set replaces a header of the same key.
type ProducerHeaders struct{ Headers *[]sarama.RecordHeader }

// Get returns the value of the first header named key, or "".
func (c ProducerHeaders) Get(key string) string {
	for _, h := range *c.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// Set sets the header named key to value.
func (c ProducerHeaders) Set(key, value string) {
	for i, h := range *c.Headers {
		if string(h.Key) == key {
			(*c.Headers)[i].Value = []byte(value)
			return
		}
	}
	*c.Headers = append(*c.Headers, sarama.RecordHeader{Key: []byte(key), Value: []byte(value)})
}

// Keys returns the names of the headers.
func (c ProducerHeaders) Keys() []string {
	keys := make([]string, 0, len(*c.Headers))
	for _, h := range *c.Headers {
		keys = append(keys, string(h.Key))
	}
	return keys
}

// ConsumerHeaders is a read-only propagation.TextMapCarrier over the
// headers of a consumed record; Set does nothing.
type ConsumerHeaders []*sarama.RecordHeader

// Get returns the value of the first header named key, or "".
func (c ConsumerHeaders) Get(key string) string {
	for _, h := range c {
		if h != nil && string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// Set does nothing: a consumed record is not changed.
func (ConsumerHeaders) Set(string, string) {}

// Keys returns the names of the headers.
func (c ConsumerHeaders) Keys() []string {
	keys := make([]string, 0, len(c))
	for _, h := range c {
		if h != nil {
			keys = append(keys, string(h.Key))
		}
	}
	return keys
}

// InjectTrace puts the trace context of ctx into the headers of every
// message of msgs, over any trace context they held. Without a valid span
// context in ctx it changes nothing.
func InjectTrace(ctx context.Context, msgs []*sarama.ProducerMessage) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	for _, m := range msgs {
		tracing.Propagator.Inject(ctx, ProducerHeaders{&m.Headers})
	}
}

// InjectTraceHeaders is InjectTrace for the headers of records still to
// be made.
func InjectTraceHeaders(ctx context.Context, headers *[]sarama.RecordHeader) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		tracing.Propagator.Inject(ctx, ProducerHeaders{headers})
	}
}

// RecordTrace returns ctx with the trace context that r carries in its
// headers (and the baggage that comes with it), or ctx itself when r
// carries no traceparent: that costs a scan of the headers, and no
// allocation.
func RecordTrace(ctx context.Context, r *sarama.ConsumerMessage) context.Context {
	if !hasHeader(r.Headers, "traceparent") {
		return ctx
	}
	return tracing.Propagator.Extract(ctx, ConsumerHeaders(r.Headers))
}

// hasHeader reports whether headers has one named key.
func hasHeader(headers []*sarama.RecordHeader, key string) bool {
	for _, h := range headers {
		if h != nil && string(h.Key) == key {
			return true
		}
	}
	return false
}

var noopSpan trace.Span = noop.Span{}

// StartSend starts the producer span of an append of n records to
// partition p of topic ("send <topic>"), a child of ctx's span. Put its
// context into the records with InjectTrace, and end it with EndSpan once
// the records are acknowledged or have failed. With tracing off it
// returns ctx and a span that records nothing.
func StartSend(ctx context.Context, topic string, p int32, n int) (context.Context, trace.Span) {
	if !tracing.Enabled() {
		return ctx, noopSpan
	}
	return tracing.Tracer().Start(ctx, "send "+topic,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", topic),
			attribute.String("messaging.destination.partition.id", strconv.Itoa(int(p))),
			attribute.Int("messaging.batch.message_count", n),
		))
}

// StartProcess returns the context of processing r: with the trace
// context r carries (RecordTrace) and, if tracing is on, a consumer span
// "process <topic>" as its child, with the record's topic, partition and
// offset. A record that carries no trace context gets no span (a replay
// or restore starts no traces), and neither does any record with tracing
// off: the span returned then records nothing. End the span with EndSpan
// once the record is applied, or has failed.
func StartProcess(ctx context.Context, r *sarama.ConsumerMessage) (context.Context, trace.Span) {
	rctx := RecordTrace(ctx, r)
	if !tracing.Enabled() || !trace.SpanContextFromContext(rctx).IsValid() {
		return rctx, noopSpan
	}
	return tracing.Tracer().Start(rctx, "process "+r.Topic,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", r.Topic),
			attribute.String("messaging.destination.partition.id", strconv.Itoa(int(r.Partition))),
			attribute.Int64("messaging.kafka.offset", r.Offset),
		))
}

// EndSpan ends span, marked failed with err if err is not nil.
func EndSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, "failed")
	}
	span.End()
}

// ProcessSpans are the spans of processing a batch of records
// (StartProcess), ended together (End). The zero value holds none.
type ProcessSpans struct{ spans []trace.Span }

// StartProcessSpans starts the span of every record of records that
// carries a trace context (StartProcess). With tracing off it allocates
// nothing and looks at no header.
func StartProcessSpans(ctx context.Context, records []*sarama.ConsumerMessage) ProcessSpans {
	if !tracing.Enabled() {
		return ProcessSpans{}
	}
	var s ProcessSpans
	for _, r := range records {
		if _, span := StartProcess(ctx, r); span.IsRecording() {
			s.spans = append(s.spans, span)
		}
	}
	return s
}

// End ends every span of s, marked failed with err if err is not nil.
func (s ProcessSpans) End(err error) {
	for _, span := range s.spans {
		EndSpan(span, err)
	}
}
