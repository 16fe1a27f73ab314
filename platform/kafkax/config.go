// Package kafkax holds what every profiles binary needs from Kafka: the
// cluster and topic settings, sarama configurations with safe defaults,
// topic creation and verification, Java-compatible key placement, a keyed
// watermill publisher, and a batched partition reader for catch-up.
package kafkax

import (
	"flag"
	"fmt"
	"time"

	"github.com/IBM/sarama"

	"profiles/platform/config"
)

// Config describes the cluster and the topics. The zero value is not
// usable; fill it with RegisterFlags or by hand and call Validate.
type Config struct {
	Brokers []string
	// EventsTopic is the event log, kept forever.
	EventsTopic string
	// SnapshotsTopic is the compacted topic of current profiles.
	SnapshotsTopic string
	// EmailIndexTopic is the compacted email index: one record per
	// (normalized email, uid), placed on the partition of the email.
	EmailIndexTopic string
	// ClaimsTopic is the compacted topic of email claims: normalized email
	// → the uid that holds it, written only by the owner of the email's
	// partition. It makes emails unique among live profiles.
	ClaimsTopic string
	// DeadLetterTopic receives the records that consumers cannot decode or
	// apply, kept forever for inspection.
	DeadLetterTopic string
	// ControlTopic is the compacted, single-partition topic that names the
	// current snapshot generation (see Generation). Every reader follows
	// it, so a switch needs no configuration change on any instance.
	ControlTopic string
	// KeysTopic is the compacted topic of the profiles' data keys, sealed
	// by the key-encryption key (see profiles/platform/pii), keyed by uid and
	// co-partitioned with the event log. A profile's delete tombstones its
	// key in the same transaction, which crypto-shreds its personal data.
	KeysTopic string
	// Partitions is the partition count of every topic (they are co-partitioned).
	Partitions int32
	// ReplicationFactor of created topics; 0 means min(3, brokers).
	ReplicationFactor int16
	// SnapshotsTopicConfig holds extra topic configs for the snapshot topic,
	// applied when it is created (tests use it to make the cleaner eager).
	SnapshotsTopicConfig map[string]string
	// Security is how clients reach the brokers: TLS and SASL/SCRAM
	// (PLAINTEXT when zero). Every configuration made by Sarama uses it.
	Security Security
}

// Flags holds the raw flag values behind a Config until Parse has run.
type Flags struct {
	brokers, events, snapshots, emailIndex, claims, dlq, control, keys, snapshotCfg *string
	partitions, replication                                                         *int
	security                                                                        *SecurityFlags
}

// RegisterFlags registers the Kafka settings on fs. Call Config after fs.Parse.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	return &Flags{
		brokers:     config.String(fs, "kafka-brokers", "KAFKA_BROKERS", "127.0.0.1:9092", "comma-separated Kafka bootstrap servers"),
		events:      config.String(fs, "events-topic", "EVENTS_TOPIC", "profile-events", "event log topic"),
		snapshots:   config.String(fs, "snapshots-topic", "SNAPSHOTS_TOPIC", "profile-snapshots", "compacted snapshot topic"),
		emailIndex:  config.String(fs, "email-index-topic", "EMAIL_INDEX_TOPIC", "profile-email-index", "compacted email index topic, partitioned by email"),
		claims:      config.String(fs, "claims-topic", "EMAIL_CLAIMS_TOPIC", "profile-email-claims", "compacted email claims topic, partitioned by email"),
		dlq:         config.String(fs, "dead-letter-topic", "DEAD_LETTER_TOPIC", "profile-dead-letters", "topic of records that consumers cannot decode or apply"),
		control:     config.String(fs, "control-topic", "CONTROL_TOPIC", "profile-control", "compacted topic naming the current snapshot generation"),
		keys:        config.String(fs, "keys-topic", "KEYS_TOPIC", "profile-keys", "compacted topic of the profiles' sealed data keys, keyed by uid"),
		snapshotCfg: config.String(fs, "snapshots-topic-config", "SNAPSHOTS_TOPIC_CONFIG", "", "extra k=v,k=v configs for a newly created snapshot topic"),
		partitions:  config.Int(fs, "topic-partitions", "TOPIC_PARTITIONS", 12, "partition count of every topic"),
		replication: config.Int(fs, "topic-replication", "TOPIC_REPLICATION", 0, "replication factor of created topics; 0 = min(3, brokers)"),
		security:    RegisterSecurityFlags(fs, "kafka-", "KAFKA_"),
	}
}

// Config returns the parsed and validated configuration.
func (f *Flags) Config() (Config, error) {
	extra, err := config.Map(*f.snapshotCfg)
	if err != nil {
		return Config{}, fmt.Errorf("SNAPSHOTS_TOPIC_CONFIG: %w", err)
	}
	sec, err := f.security.Security()
	if err != nil {
		return Config{}, err
	}
	c := Config{
		Security:             sec,
		Brokers:              config.List(*f.brokers),
		EventsTopic:          *f.events,
		SnapshotsTopic:       *f.snapshots,
		EmailIndexTopic:      *f.emailIndex,
		ClaimsTopic:          *f.claims,
		DeadLetterTopic:      *f.dlq,
		ControlTopic:         *f.control,
		KeysTopic:            *f.keys,
		Partitions:           int32(*f.partitions),
		ReplicationFactor:    int16(*f.replication),
		SnapshotsTopicConfig: extra,
	}
	return c, c.Validate()
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return fmt.Errorf("kafka: no brokers")
	case c.EventsTopic == "" || c.SnapshotsTopic == "" || c.EmailIndexTopic == "" || c.ClaimsTopic == "" || c.DeadLetterTopic == "" || c.ControlTopic == "" || c.KeysTopic == "":
		return fmt.Errorf("kafka: empty topic name")
	case len(map[string]bool{c.EventsTopic: true, c.SnapshotsTopic: true, c.EmailIndexTopic: true, c.ClaimsTopic: true, c.DeadLetterTopic: true, c.ControlTopic: true, c.KeysTopic: true}) != 7:
		return fmt.Errorf("kafka: the events, snapshots, email index, claims, dead-letter, control and keys topics must differ")
	case c.Partitions < 1:
		return fmt.Errorf("kafka: partitions must be at least 1, got %d", c.Partitions)
	case c.ReplicationFactor < 0:
		return fmt.Errorf("kafka: replication factor must not be negative")
	}
	return c.Security.Validate()
}

// MinBrokerVersion is the oldest Kafka release the services talk to. Kafka
// 4 removed the oldest protocol versions, so sarama's default is too old.
var MinBrokerVersion = sarama.V4_0_0_0

// Sarama returns a client configuration for clientID with the settings every
// profiles client shares. Callers may change the returned value.
func (c Config) Sarama(clientID string) *sarama.Config {
	sc := sarama.NewConfig()
	sc.ClientID = clientID
	sc.Version = MinBrokerVersion
	sc.Metadata.Retry.Max = 10
	sc.Metadata.Retry.Backoff = 500 * time.Millisecond
	sc.Consumer.Return.Errors = true
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	// command-svc appends in transactions: never see an aborted one.
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	c.Security.apply(sc)
	return sc
}

// ProducerSarama returns a configuration for a durable, ordered producer:
// acks from all in-sync replicas, idempotence (so a retry never writes a
// duplicate or reorders), and Java-compatible murmur2 key placement of the
// key's partition part (see PartitionKey).
func (c Config) ProducerSarama(clientID string) *sarama.Config {
	sc := c.Sarama(clientID)
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1 // required by sarama for an idempotent producer
	sc.Producer.Retry.Max = 10
	sc.Producer.Retry.Backoff = 200 * time.Millisecond
	sc.Producer.Return.Successes = true // watermill's sync publisher needs it
	sc.Producer.Return.Errors = true
	sc.Producer.Partitioner = newKeyPrefixPartitioner
	return sc
}
