package kafkax

import (
	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

// KeyMetadata is the watermill metadata entry that NewPublisher uses as the
// Kafka record key. It is not written as a header.
const KeyMetadata = "kafka_key"

// NewPublisher returns a watermill publisher to brokers with the producer
// configuration sc, normally one made by a ProducerSarama (durable:
// Publish then blocks until every in-sync replica has the record). Each
// message's KeyMetadata becomes the record key, placed by
// sc.Producer.Partitioner (a message without one is written without a
// key); a message with a nil payload is written as a tombstone. The
// publisher owns sc from then on.
func NewPublisher(brokers []string, sc *sarama.Config, logger watermill.LoggerAdapter) (*kafka.Publisher, error) {
	return kafka.NewPublisher(kafka.PublisherConfig{
		Brokers:               brokers,
		Marshaler:             keyedMarshaler{},
		OverwriteSaramaConfig: sc,
	}, logger)
}

// NewKeyedMessage returns a message for NewPublisher with the given id, key,
// headers and payload (nil for a tombstone).
func NewKeyedMessage(id, key string, headers map[string]string, payload []byte) *message.Message {
	msg := message.NewMessage(id, payload)
	for k, v := range headers {
		msg.Metadata.Set(k, v)
	}
	msg.Metadata.Set(KeyMetadata, key)
	return msg
}

// keyedMarshaler is watermill's default marshaler with the record key taken
// from KeyMetadata instead of a header.
type keyedMarshaler struct{ kafka.DefaultMarshaler }

func (m keyedMarshaler) Marshal(topic string, msg *message.Message) (*sarama.ProducerMessage, error) {
	key := msg.Metadata.Get(KeyMetadata)
	m2 := msg.Copy()
	m2.Metadata = make(message.Metadata, len(msg.Metadata))
	for k, v := range msg.Metadata {
		if k != KeyMetadata {
			m2.Metadata[k] = v
		}
	}
	pm, err := m.DefaultMarshaler.Marshal(topic, m2)
	if err != nil {
		return nil, err
	}
	if key != "" {
		pm.Key = sarama.StringEncoder(key)
	}
	if msg.Payload == nil {
		pm.Value = nil // a tombstone
	}
	return pm, nil
}
