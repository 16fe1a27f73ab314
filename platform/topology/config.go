// Package topology is the profiles topic layout on Kafka: the names and
// partition count of the topics, their required configs (Specs) and their
// creation and verification (EnsureTopics), the snapshot generations and
// the control topic that names the current one, the dead-letter topic, and
// the keys of the email index (IndexKey), with the producer placement they
// need. The Kafka client itself is profiles/platform/kafkax's.
package topology

import (
	"flag"
	"fmt"

	"github.com/IBM/sarama"

	"profiles/platform/config"
	"profiles/platform/kafkax"
)

// Config is the cluster (the embedded kafkax.Config: brokers, security,
// client settings) and the profiles topics on it. The zero value is not
// usable; fill it with RegisterFlags or by hand and call Validate.
type Config struct {
	kafkax.Config
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
	// current snapshot generation (see ForGeneration). Every reader follows
	// it, so a switch needs no configuration change on any instance.
	ControlTopic string
	// KeysTopic is the compacted topic of the profiles' data keys, sealed
	// by the key-encryption key, keyed by uid and co-partitioned with the
	// event log. A profile's delete tombstones its key in the same
	// transaction, which crypto-shreds its personal data.
	KeysTopic string
	// Partitions is the partition count of every topic (they are co-partitioned).
	Partitions int32
	// ReplicationFactor of created topics; 0 means min(3, brokers).
	ReplicationFactor int16
	// SnapshotsTopicConfig holds extra topic configs for the snapshot topic,
	// applied when it is created (tests use it to make the cleaner eager).
	SnapshotsTopicConfig map[string]string
	// CheckOnly (TOPICS_CREATE=false) creates no topic: the services only
	// verify the topics (partitions, cleanup policy) and refuse to start
	// when one is missing, for clusters where topics are provisioned by
	// the platform (managed Kafka, Strimzi's KafkaTopic, Terraform).
	CheckOnly bool
}

// Flags holds the raw flag values behind a Config until Config has run.
type Flags struct {
	kafka                                                                  *kafkax.Flags
	events, snapshots, emailIndex, claims, dlq, control, keys, snapshotCfg *string
	partitions, replication                                                *int
	create                                                                 *bool
}

// RegisterFlags registers the cluster settings (kafkax.RegisterFlags) and
// the topic settings on fs. Call Config after fs.Parse.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	return &Flags{
		kafka:       kafkax.RegisterFlags(fs),
		events:      config.String(fs, "events-topic", "EVENTS_TOPIC", "profile-events", "event log topic"),
		snapshots:   config.String(fs, "snapshots-topic", "SNAPSHOTS_TOPIC", "profile-snapshots", "compacted snapshot topic"),
		emailIndex:  config.String(fs, "email-index-topic", "EMAIL_INDEX_TOPIC", "profile-email-index", "compacted email index topic, partitioned by email"),
		claims:      config.String(fs, "claims-topic", "EMAIL_CLAIMS_TOPIC", "profile-email-claims", "compacted email claims topic, partitioned by email"),
		dlq:         config.String(fs, "dead-letter-topic", "DEAD_LETTER_TOPIC", "profile-dead-letters", "topic of records that consumers cannot decode or apply"),
		control:     config.String(fs, "control-topic", "CONTROL_TOPIC", "profile-control", "compacted topic naming the current snapshot generation"),
		keys:        config.String(fs, "keys-topic", "KEYS_TOPIC", "profile-keys", "compacted topic of the profiles' sealed data keys, keyed by uid"),
		snapshotCfg: config.String(fs, "snapshots-topic-config", "SNAPSHOTS_TOPIC_CONFIG", "", "extra k=v,k=v configs for a newly created snapshot topic"),
		partitions:  config.Int(fs, "topic-partitions", "TOPIC_PARTITIONS", 12, "partition count of every topic"),
		create:      config.Bool(fs, "topics-create", "TOPICS_CREATE", true, "create missing topics at start; false: only check them (partitions, cleanup policy) and refuse to start when one is missing or wrong"),
		replication: config.Int(fs, "topic-replication", "TOPIC_REPLICATION", 0, "replication factor of created topics; 0 = min(3, brokers)"),
	}
}

// Config returns the parsed and validated configuration.
func (f *Flags) Config() (Config, error) {
	extra, err := config.Map(*f.snapshotCfg)
	if err != nil {
		return Config{}, fmt.Errorf("SNAPSHOTS_TOPIC_CONFIG: %w", err)
	}
	kc, err := f.kafka.Config()
	if err != nil {
		return Config{}, err
	}
	c := Config{
		Config:               kc,
		EventsTopic:          *f.events,
		SnapshotsTopic:       *f.snapshots,
		EmailIndexTopic:      *f.emailIndex,
		ClaimsTopic:          *f.claims,
		DeadLetterTopic:      *f.dlq,
		ControlTopic:         *f.control,
		KeysTopic:            *f.keys,
		Partitions:           int32(*f.partitions),
		CheckOnly:            !*f.create,
		ReplicationFactor:    int16(*f.replication),
		SnapshotsTopicConfig: extra,
	}
	return c, c.Validate()
}

// Validate reports a configuration that cannot work: that of the cluster
// (kafkax.Config.Validate), an empty or repeated topic name, or a
// partition count below 1.
func (c Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return c.Config.Validate()
	case c.EventsTopic == "" || c.SnapshotsTopic == "" || c.EmailIndexTopic == "" || c.ClaimsTopic == "" || c.DeadLetterTopic == "" || c.ControlTopic == "" || c.KeysTopic == "":
		return fmt.Errorf("kafka: empty topic name")
	case len(map[string]bool{c.EventsTopic: true, c.SnapshotsTopic: true, c.EmailIndexTopic: true, c.ClaimsTopic: true, c.DeadLetterTopic: true, c.ControlTopic: true, c.KeysTopic: true}) != 7:
		return fmt.Errorf("kafka: the events, snapshots, email index, claims, dead-letter, control and keys topics must differ")
	case c.Partitions < 1:
		return fmt.Errorf("kafka: partitions must be at least 1, got %d", c.Partitions)
	case c.ReplicationFactor < 0:
		return fmt.Errorf("kafka: replication factor must not be negative")
	}
	return c.Config.Validate()
}

// ProducerSarama is kafkax.Config.ProducerSarama with the placement the
// profiles topics need: a key is placed by its part before the first 0
// byte (see IndexKey), so every index entry of one email lands on the
// email's partition; a key without a 0 byte, such as a uid, is placed
// exactly as the Java client places it. Every producer of the profiles
// topics uses it.
func (c Config) ProducerSarama(clientID string) *sarama.Config {
	sc := c.Config.ProducerSarama(clientID)
	sc.Producer.Partitioner = newKeyPrefixPartitioner
	return sc
}
