// Package kafkax is what any Kafka service needs, whatever its topics: the
// cluster settings and their security, sarama configurations with safe
// defaults, connecting, Java-compatible key placement, a batched partition
// reader, offsets, a consumer group with its own member strategy, and a
// keyed watermill publisher. The profiles topics themselves (their names,
// layout and generations) are profiles/platform/topology's.
package kafkax

import (
	"cmp"
	"flag"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	gometrics "github.com/rcrowley/go-metrics"

	"profiles/platform/config"
)

// Config describes how to reach the cluster. The zero value is not usable;
// fill it with RegisterFlags or by hand and call Validate.
type Config struct {
	Brokers []string
	// Security is how clients reach the brokers: TLS and SASL (SCRAM,
	// PLAIN, OAUTHBEARER), PLAINTEXT when zero. Every configuration made by
	// Sarama uses it.
	Security Security
	// MetadataRefresh is how often every client asks for the cluster's
	// metadata; 0 means DefaultMetadataRefresh.
	MetadataRefresh time.Duration
}

// Flags holds the raw flag values behind a Config until Config has run.
type Flags struct {
	brokers         *string
	metadataRefresh *time.Duration
	security        *SecurityFlags
}

// RegisterFlags registers the cluster settings on fs: -kafka-brokers
// (KAFKA_BROKERS), -kafka-metadata-refresh (KAFKA_METADATA_REFRESH) and
// the security flags with the kafka-/KAFKA_ prefix.
// Call Config after fs.Parse.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	return &Flags{
		brokers: config.String(fs, "kafka-brokers", "KAFKA_BROKERS", "127.0.0.1:9092", "comma-separated Kafka bootstrap servers"),
		metadataRefresh: config.Duration(fs, "kafka-metadata-refresh", "KAFKA_METADATA_REFRESH", DefaultMetadataRefresh,
			"how often every Kafka client asks for the cluster's metadata (how soon it learns that a leader it uses was deposed)"),
		security: RegisterSecurityFlags(fs, "kafka-", "KAFKA_"),
	}
}

// Config returns the parsed and validated configuration, with its
// security loaded.
func (f *Flags) Config() (Config, error) {
	sec, err := f.security.Security()
	if err != nil {
		return Config{}, err
	}
	c := Config{Brokers: config.List(*f.brokers), Security: sec, MetadataRefresh: *f.metadataRefresh}
	return c, c.Validate()
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return fmt.Errorf("kafka: no brokers")
	}
	if c.MetadataRefresh < 0 {
		return fmt.Errorf("kafka: a negative metadata refresh interval (%s)", c.MetadataRefresh)
	}
	return c.Security.Validate()
}

// sarama records metrics of every client (go-metrics meters and
// histograms per broker, each updated on every request, the histograms
// under a lock), and nothing in this module reads or exports them: the
// services export their own Prometheus metrics. They cost 1.5-2% of a
// service's CPU during writes (its CPU profiles in make bench), so they
// are off in every process that uses kafkax.
func init() { gometrics.UseNilMetrics = true }

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
	sc.Metadata.RefreshFrequency = cmp.Or(c.MetadataRefresh, DefaultMetadataRefresh)
	sc.Consumer.Return.Errors = true
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	// command-svc appends in transactions: never see an aborted one.
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	// A fetch asks for at most 256 KiB per partition (sarama: 1 MiB), a
	// thousand records of this service's size, and 8 MiB in all (sarama:
	// 50 MiB). A process runs several consumers of all 12 partitions (the
	// keyring, the group, the followers), and the records of a response
	// keep all of it in memory until the last one is handled: at 1 MiB per
	// partition they were the largest part of the heap once the stores
	// moved to Pebble (see BENCH.md).
	sc.Consumer.Fetch.Default = 256 << 10
	sc.Consumer.Fetch.MaxBytes = 8 << 20
	// A failed fetch (a leader that moved) is retried after 100 ms,
	// doubling up to 2 s (ConsumerRetryBackoff), and a refused join (a
	// rebalance in progress, a coordinator that moved) after 250 ms, as
	// the Java clients do (retry.backoff.ms 100 ms, growing to 1 s), not
	// after sarama's fixed 2 s: those 2 s were a restart's and a
	// failover's largest single waits (see docs/faults.md). The join is
	// tried 20 times (5 s) before Consume gives up, about sarama's 4 × 2 s.
	sc.Consumer.Retry.BackoffFunc = ConsumerRetryBackoff
	sc.Consumer.Group.Rebalance.Retry.Backoff = 250 * time.Millisecond
	sc.Consumer.Group.Rebalance.Retry.Max = 20
	c.Security.apply(sc)
	// Last, so that a security setting that refuses every connection
	// keeps its dialer.
	trackConns(sc)
	return sc
}

// DefaultMetadataRefresh is how often every client asks for the cluster's
// metadata unless Config.MetadataRefresh says otherwise (sarama: every 10
// minutes). A leader cut off from the controller quorum is fenced and its
// partitions move, but it does not learn that until the cut heals: it
// answers fetches without an error and without the records the new leader
// takes, and holds produce requests. A client learns of the move only from
// another broker's metadata, which no longer lists the deposed one: sarama
// then drops it and closes its connections, and the consumers and
// producers that used it look up the new leaders. Without errors to prompt
// a lookup, that waits for this refresh. Each refresh asks for every topic
// of the cluster, from every client of every process: a shorter interval
// moves the consumers sooner and costs the brokers more (see BENCH.md's
// note on it and docs/faults.md).
const DefaultMetadataRefresh = 5 * time.Second

// ProducerSarama returns a configuration for a durable, ordered producer:
// acks from all in-sync replicas, idempotence (so a retry never writes a
// duplicate or reorders), and Java-compatible murmur2 key placement (see
// Partition). Callers may change the returned value, for example its
// Producer.Partitioner.
func (c Config) ProducerSarama(clientID string) *sarama.Config {
	sc := c.Sarama(clientID)
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1 // required by sarama for an idempotent producer
	sc.Producer.Retry.Max = 10
	sc.Producer.Retry.Backoff = 200 * time.Millisecond
	sc.Producer.Return.Successes = true // watermill's sync publisher needs it
	sc.Producer.Return.Errors = true
	sc.Producer.Partitioner = sarama.NewMurmur2Partitioner
	// A linger of 1 ms (Kafka's own default is 5 ms): the records of one
	// SendMessages then leave as one produce request per broker, after
	// one AddPartitionsToTxn in a transaction, instead of a request for
	// the first record and more for the rest, each waiting for the last
	// (one request in flight per broker, as idempotence needs here).
	sc.Producer.Flush.Frequency = time.Millisecond
	sc.Producer.Transaction.Retry.BackoffFunc = TxnRetryBackoff
	return sc
}

// ConsumerRetryBackoff is the wait before a partition consumer's retry
// number retries (from 1) after a failed fetch: 100 ms, doubling, at most
// 2 s.
func ConsumerRetryBackoff(retries int) time.Duration {
	return min(100*time.Millisecond<<min(max(retries-1, 0), 5), 2*time.Second)
}

// TxnRetryBackoff is the wait before retry number retries (from 0) of a
// transaction request: 1 ms, doubling up to 100 ms (sarama's fixed
// default). Most retries are of CONCURRENT_TRANSACTIONS, which the
// coordinator answers while it still writes the previous transaction's
// markers, a few milliseconds on a healthy cluster; a fixed 20-100 ms
// wait there made each transaction of a busy producer last 30-60 ms (see
// BENCH.md). The 50 retries of Retry.Max wait 4.4 s in all (sarama's
// fixed backoff: 5 s), so a coordinator away for seconds is still waited
// for.
func TxnRetryBackoff(retries, _ int) time.Duration {
	if retries >= 7 {
		return 100 * time.Millisecond
	}
	return time.Millisecond << retries
}
