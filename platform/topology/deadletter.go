package topology

import (
	"fmt"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/platform/kafkax"
)

// Headers a dead letter carries besides the original record's own.
const (
	HeaderDLQTopic     = "dlq-source-topic"
	HeaderDLQPartition = "dlq-source-partition"
	HeaderDLQOffset    = "dlq-source-offset"
	HeaderDLQReason    = "dlq-reason"
	HeaderDLQConsumer  = "dlq-consumer"
	HeaderDLQTime      = "dlq-time"
)

var deadLetters = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "profiles_dead_letters_total",
	Help: "Records a consumer could not decode or apply and set aside in the dead-letter topic, by source topic and result (sent, or failed to send).",
}, []string{"source", "result"})

// DeadRecord is a record a consumer cannot use.
type DeadRecord struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   map[string]string
}

// FromConsumerMessage returns the DeadRecord of a sarama record.
func FromConsumerMessage(r *sarama.ConsumerMessage) DeadRecord {
	h := map[string]string{}
	for _, rh := range r.Headers {
		if rh != nil {
			h[string(rh.Key)] = string(rh.Value)
		}
	}
	return DeadRecord{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Headers: h}
}

// DeadLetters writes poison records to the dead-letter topic, with the
// original key, value and headers, and headers naming the source topic,
// partition and offset, the reason and the consumer. Consumers then move on
// instead of stalling; the record also stays where it was. It is safe for
// concurrent use.
//
// It writes with a watermill publisher (kafkax.NewPublisher): dead letters
// are rare and each is sent on its own and waited for, which is what that
// publisher does.
type DeadLetters struct {
	publisher message.Publisher
	topic     string
	consumer  string
}

// NewDeadLetters connects a producer for c.DeadLetterTopic. consumer names
// the service that sets records aside.
func NewDeadLetters(c Config, consumer string) (*DeadLetters, error) {
	p, err := kafkax.NewPublisher(c.Brokers, c.ProducerSarama(consumer+"-dlq"), watermill.NopLogger{})
	if err != nil {
		return nil, fmt.Errorf("dead-letter producer: %w", err)
	}
	return &DeadLetters{publisher: p, topic: c.DeadLetterTopic, consumer: consumer}, nil
}

// Send writes one dead letter and returns once it is replicated.
func (d *DeadLetters) Send(r DeadRecord, reason error) error {
	// The original headers first, so that the dead letter's own win.
	headers := make(map[string]string, len(r.Headers)+6)
	for k, v := range r.Headers {
		headers[k] = v
	}
	headers[HeaderDLQTopic] = r.Topic
	headers[HeaderDLQPartition] = strconv.Itoa(int(r.Partition))
	headers[HeaderDLQOffset] = strconv.FormatInt(r.Offset, 10)
	headers[HeaderDLQReason] = reason.Error()
	headers[HeaderDLQConsumer] = d.consumer
	headers[HeaderDLQTime] = time.Now().UTC().Format(time.RFC3339Nano)
	msg := kafkax.NewKeyedMessage(watermill.NewUUID(), string(r.Key), headers, r.Value)
	if err := d.publisher.Publish(d.topic, msg); err != nil {
		deadLetters.WithLabelValues(r.Topic, "failed").Inc()
		return fmt.Errorf("dead letter for %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	deadLetters.WithLabelValues(r.Topic, "sent").Inc()
	return nil
}

// Close closes the producer.
func (d *DeadLetters) Close() error { return d.publisher.Close() }
