package topology

import (
	"fmt"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
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
type DeadLetters struct {
	producer sarama.SyncProducer
	topic    string
	consumer string
}

// NewDeadLetters connects a producer for c.DeadLetterTopic. consumer names
// the service that sets records aside.
func NewDeadLetters(c Config, consumer string) (*DeadLetters, error) {
	p, err := sarama.NewSyncProducer(c.Brokers, c.ProducerSarama(consumer+"-dlq"))
	if err != nil {
		return nil, fmt.Errorf("dead-letter producer: %w", err)
	}
	return &DeadLetters{producer: p, topic: c.DeadLetterTopic, consumer: consumer}, nil
}

// Send writes one dead letter and returns once it is replicated.
func (d *DeadLetters) Send(r DeadRecord, reason error) error {
	headers := []sarama.RecordHeader{
		{Key: []byte(HeaderDLQTopic), Value: []byte(r.Topic)},
		{Key: []byte(HeaderDLQPartition), Value: []byte(strconv.Itoa(int(r.Partition)))},
		{Key: []byte(HeaderDLQOffset), Value: []byte(strconv.FormatInt(r.Offset, 10))},
		{Key: []byte(HeaderDLQReason), Value: []byte(reason.Error())},
		{Key: []byte(HeaderDLQConsumer), Value: []byte(d.consumer)},
		{Key: []byte(HeaderDLQTime), Value: []byte(time.Now().UTC().Format(time.RFC3339Nano))},
	}
	for k, v := range r.Headers {
		headers = append(headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
	}
	msg := &sarama.ProducerMessage{Topic: d.topic, Headers: headers}
	if r.Key != nil {
		msg.Key = sarama.ByteEncoder(r.Key)
	}
	if r.Value != nil {
		msg.Value = sarama.ByteEncoder(r.Value)
	}
	if _, _, err := d.producer.SendMessage(msg); err != nil {
		deadLetters.WithLabelValues(r.Topic, "failed").Inc()
		return fmt.Errorf("dead letter for %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	deadLetters.WithLabelValues(r.Topic, "sent").Inc()
	return nil
}

// Close closes the producer.
func (d *DeadLetters) Close() error { return d.producer.Close() }
