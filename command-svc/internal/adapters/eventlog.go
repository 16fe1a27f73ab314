// Package adapters connects command-svc's use cases to Kafka and to
// query-svc.
package adapters

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"profiles/events"
	"profiles/platform/kafkax"
)

// EventLog appends events to the event log topic through a watermill
// publisher built by kafkax.NewPublisher (acks=all, idempotent, keyed by
// profile uid so that a profile's events stay in order on one partition).
type EventLog struct {
	Publisher message.Publisher
	Topic     string
	// Source is the CloudEvents ce_source of the events, e.g. "/command-svc".
	Source string
}

// Append writes es in order and returns when every one of them is
// replicated, or at the first failure.
func (l EventLog) Append(_ context.Context, es ...events.Event) error {
	for _, e := range es {
		value, err := events.Encode(e)
		if err != nil {
			return err
		}
		msg := kafkax.NewKeyedMessage(e.ID, e.UID, events.Headers(e, l.Source), value)
		if err := l.Publisher.Publish(l.Topic, msg); err != nil {
			return fmt.Errorf("append %s v%d of %s: %w", e.Type, e.Version, e.UID, err)
		}
	}
	return nil
}
