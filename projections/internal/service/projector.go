package service

import (
	"context"
	"flag"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/pebblex"
	"profiles/platform/service"
	"profiles/platform/topology"
	"profiles/projections/projector"
)

var recordsRestored = promauto.NewCounter(prometheus.CounterOpts{
	Name: "profiles_projector_state_records_restored_total",
	Help: "Records of the snapshot topic read into the projector's state at start (after a restart, only those past the store's offsets).",
})

// ProjectorName is the projector's name: in its logs and Kafka client ids.
const ProjectorName = "projector"

// ProjectorConfig is the projector's configuration.
type ProjectorConfig struct {
	Common       *service.Flags
	Kafka        *service.KafkaFlags
	Group        *string
	DataDir      *string
	StateCacheMB *int
	// SessionTimeout is how long the group keeps a silent projector's
	// partitions. With INSTANCE_ID the membership is static: a restart
	// within it gets them back at once, without a rebalance.
	SessionTimeout *time.Duration
	// CommitInterval is how long a transaction waits, after its first
	// batch, for the batches of other partitions to share it.
	CommitInterval *time.Duration
}

// DefaultCommitInterval is COMMIT_INTERVAL's default.
const DefaultCommitInterval = 5 * time.Millisecond

// DefaultStateCacheMB is STATE_CACHE_MB's default: the block cache that
// keeps the state of the profiles being folded in memory.
const DefaultStateCacheMB = 32

// RegisterProjectorFlags registers the projector's settings on fs.
func RegisterProjectorFlags(fs *flag.FlagSet) *ProjectorConfig {
	return &ProjectorConfig{
		Common: service.RegisterFlags(fs, ":8083"),
		Kafka:  service.RegisterKafkaFlags(fs),
		Group:  config.String(fs, "group", "PROJECTOR_GROUP", "profiles-projector", "consumer group of the projector"),
		DataDir: config.String(fs, "data-dir", "DATA_DIR", ".data/projector",
			"directory of the Pebble stores: state/, the latest snapshot of every profile, and keys/, the keyring's (caches of Kafka: safe to delete, they are then restored from the snapshot and keys topics)"),
		StateCacheMB: config.Int(fs, "state-cache-mb", "STATE_CACHE_MB", DefaultStateCacheMB, "Pebble block cache of the state store, in MiB"),
		SessionTimeout: config.Duration(fs, "session-timeout", "SESSION_TIMEOUT", 10*time.Second,
			"how long a silent projector keeps its partitions (with INSTANCE_ID a restart within it gets them back without a rebalance)"),
		CommitInterval: config.Duration(fs, "commit-interval", "COMMIT_INTERVAL", DefaultCommitInterval,
			"how long a transaction of snapshots waits, after the first partition's batch, for other partitions' batches to share it (each transaction costs the broker several requests and a marker per partition); 0 does not wait"),
	}
}

// NewApplication wires the projector on boot (made by service.NewBoot,
// not yet connected): it connects to Kafka and returns the service to
// run, which follows the snapshot generations and folds the event log
// into the current one. What it acquires is released by boot.Close, also
// after an error.
func (cfg *ProjectorConfig) NewApplication(ctx context.Context, boot *service.Boot) (*service.Application, error) {
	if err := boot.Connect(ctx); err != nil {
		return nil, err
	}
	log, kcfg, client := boot.Log, boot.Kafka, boot.Client
	self, static, err := cfg.Common.Self(ProjectorName)
	if err != nil {
		return nil, err
	}
	// A transactional sarama producer, not watermill's publisher: Publish
	// sends one message at a time and waits for each, and a batch of
	// events must be one produce request (see BENCH.md). Transactions let
	// a producer whose requests a broker holds be replaced safely: the
	// replacement fences it, so nothing it sent can land after what is
	// written again (kafkax.TxnWriter).
	producer := kafkax.NewTxnWriter(kafkax.TxnWriterOptions{
		Brokers: kcfg.Brokers, Producer: func() *sarama.Config { return kcfg.ProducerSarama(ProjectorName) },
		TransactionalID: *cfg.Group + "-" + self.ID,
		TxnTimeout:      *cfg.SessionTimeout, Linger: max(*cfg.CommitInterval, 0), Topic: kcfg.EventsTopic, Log: log,
	})
	boot.DeferClose(producer)
	dlq, err := topology.NewDeadLetters(kcfg, ProjectorName)
	if err != nil {
		return nil, err
	}
	boot.DeferClose(dlq)
	// The store records the cluster and the event log it is folded from:
	// a data directory that comes from elsewhere is emptied and restored.
	data, err := boot.OpenDataDir(*cfg.DataDir)
	if err != nil {
		return nil, err
	}
	db, err := pebblex.Open(data.Store("state"), vfs.Default, pebblex.Options{What: "the projector's state", Store: "projector_state", Layout: projector.StateLayout,
		Origin: data.Cluster + " " + kcfg.EventsTopic, CacheSize: int64(*cfg.StateCacheMB) << 20, Log: log})
	if err != nil {
		return nil, err
	}
	boot.DeferClose(db)

	// restored is the generation whose state has been restored and which
	// the projector folds into now (0 while none is).
	var restored atomic.Int64
	// group is the consumer group member of the generation folded now
	// (nil until its state is restored). The projector is ready once it
	// is in a session of that group and has caught up with what it owns:
	// until then no event is folded, and a write waits for nothing.
	var group atomic.Pointer[kafkax.Group]
	var health httpx.Health
	health.Check("state", func() error {
		if restored.Load() == 0 {
			return projector.ErrNotRestored
		}
		return nil
	})
	health.Check("group", func() error {
		g := group.Load()
		if g == nil {
			return projector.ErrNotRestored
		}
		return g.Ready()
	})
	router := service.NewRouter(log, &health, cfg.Common.AccessLogOption())

	// Each snapshot generation has its own consumer group, whose offsets
	// replay sets to the generation's cutoff: at a switch the projector
	// stops folding into the old generation's topics and continues the new
	// one's exactly where replay stopped.
	fold := func(ctx context.Context, n int, ready func()) error {
		gcfg := kcfg.ForGeneration(n)
		ggroup := topology.GenerationGroup(*cfg.Group, n)
		ready() // one projector per generation: stop the old one first
		restored.Store(0)
		if err := topology.EnsureGeneration(ctx, kcfg, ProjectorName, n); err != nil {
			return err
		}
		state, err := projector.OpenState(db, gcfg.SnapshotsTopic)
		if err != nil {
			return err
		}
		p := &projector.Projector{
			DeadLetters: dlq,
			Producer:    producer, Client: client,
			EventsTopic: kcfg.EventsTopic, SnapshotsTopic: gcfg.SnapshotsTopic, EmailIndexTopic: gcfg.EmailIndexTopic,
			State: state, Log: log.With("generation", n),
			Codec: boot.Codec,
		}
		start := time.Now()
		records, err := p.State.Restore(ctx, boot.Codec, client)
		if err != nil {
			return err
		}
		restored.Store(int64(n))
		recordsRestored.Add(float64(records))
		log.Info("state restored from the snapshot topic", "generation", n, "snapshots", gcfg.SnapshotsTopic,
			"group", ggroup, "records", records, "took", time.Since(start))
		// A plain sarama consumer group (kafkax.Group), not watermill's
		// subscriber: that delivers one un-acked message per partition at a
		// time, so events could never be written in batches. Each batch's
		// offset is committed after Handle has written it.
		opts := kafkax.GroupOptions{
			Group: ggroup, Topics: []string{kcfg.EventsTopic}, Self: self, SessionTimeout: *cfg.SessionTimeout,
			Start: kafkax.CommittedStart(client, ggroup), Handle: p.Handle,
		}
		if static {
			opts.InstanceID = self.ID
		}
		g, err := kafkax.NewGroup(client, opts, log.With("generation", n))
		if err != nil {
			return err
		}
		group.Store(g)
		defer group.CompareAndSwap(g, nil)
		return g.Run(ctx, kcfg.GroupConfig(ProjectorName, opts), kcfg.Brokers)
	}
	follow := func(ctx context.Context) error {
		return topology.FollowGenerations(ctx, client, kcfg.ControlTopic, log, fold)
	}
	a := cfg.Common.Application(log, router, follow, boot.RunKeys)
	a.Starting = []any{"kafka_security", kcfg.Security, "http_addr", *cfg.Common.HTTPAddr, "events", kcfg.EventsTopic, "control", kcfg.ControlTopic, "group", *cfg.Group, "data_dir", *cfg.DataDir}
	return a, nil
}
