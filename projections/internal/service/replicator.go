package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/service"
	"profiles/projections/replicator"
)

// ReplicatorName is the replicator's name: in its logs and Kafka client
// ids.
const ReplicatorName = "replicator"

// ReplicatorConfig is the replicator's configuration. Its Kafka.PII
// settings serve only SINK=postgres and SINK=clear (see NewApplication).
type ReplicatorConfig struct {
	Common *service.Flags
	Kafka  *service.KafkaFlags

	Sink            *string
	TargetBrokers   *string
	TargetSecurity  *kafkax.SecurityFlags
	MirrorEvents    *bool
	CheckpointTopic *string
	TransactionalID *string
	PostgresURL     *string
	ResetPositions  *bool

	ClearTopic            *string
	ClearMaxCompactionLag *time.Duration
	ClearDeleteRetention  *time.Duration
}

// The defaults of CHECKPOINT_TOPIC and TRANSACTIONAL_ID, the kafka sink's;
// SINK=clear replaces them with its own (see NewApplication), so that a
// mirror and a clear sink left at the defaults do not fence each other.
const (
	defaultCheckpointTopic = "profile-mirror-checkpoints"
	defaultTransactionalID = "profiles-mirror"
)

// RegisterReplicatorFlags registers the replicator's settings on fs.
func RegisterReplicatorFlags(fs *flag.FlagSet) *ReplicatorConfig {
	return &ReplicatorConfig{
		Common:          service.RegisterFlags(fs, ":8084"),
		Kafka:           service.RegisterKafkaFlags(fs),
		Sink:            config.String(fs, "sink", "SINK", "kafka", "kafka (mirror to TARGET_BROKERS), postgres (POSTGRES_URL) or clear (the profiles in clear, in the compacted topic CLEAR_TOPIC of the same cluster)"),
		TargetBrokers:   config.String(fs, "target-brokers", "TARGET_BROKERS", "", "kafka sink: comma-separated bootstrap servers of the target cluster"),
		TargetSecurity:  kafkax.RegisterSecurityFlags(fs, "target-kafka-", "TARGET_KAFKA_"),
		MirrorEvents:    config.Bool(fs, "mirror-events", "MIRROR_EVENTS", false, "kafka sink: mirror the event log too, not only the snapshots"),
		CheckpointTopic: config.String(fs, "checkpoint-topic", "CHECKPOINT_TOPIC", defaultCheckpointTopic, "kafka and clear sinks: compacted topic that holds the sink's positions (on the target cluster for kafka; profile-clear-checkpoints by default for clear)"),
		TransactionalID: config.String(fs, "transactional-id", "TRANSACTIONAL_ID", defaultTransactionalID, "kafka and clear sinks: transactional id of the sink's producer, one per replicator (profiles-clear by default for clear)"),
		PostgresURL:     config.String(fs, "postgres-url", "POSTGRES_URL", "", "postgres sink: connection URL, e.g. postgres://user@127.0.0.1:5432/db?sslmode=disable"),
		ResetPositions:  config.Bool(fs, "reset-positions", "RESET_POSITIONS", false, "postgres sink: delete the stored positions at start, so that the snapshots are replayed from offset 0 (harmless: the table ends unchanged)"),

		ClearTopic:            config.String(fs, "clear-topic", "CLEAR_TOPIC", "profile-clear", "clear sink: the compacted topic of the current profiles in clear (key: uid; value: the profile's JSON; a delete is a tombstone)"),
		ClearMaxCompactionLag: config.Duration(fs, "clear-max-compaction-lag", "CLEAR_MAX_COMPACTION_LAG", time.Hour, "clear sink: the clear topic's max.compaction.lag.ms: a deleted profile's clear values leave the brokers' disks within about this time of its delete"),
		ClearDeleteRetention:  config.Duration(fs, "clear-delete-retention", "CLEAR_DELETE_RETENTION", 7*24*time.Hour, "clear sink: the clear topic's delete.retention.ms: how long a tombstone stays for consumers that lag"),
	}
}

// Boot returns the Kafka settings the replicator boots with: those of
// Kafka without the personal data ones, since only SINK=postgres and
// SINK=clear load the key-encryption key (NewApplication does, after connecting).
func (cfg *ReplicatorConfig) Boot() *service.KafkaFlags {
	return &service.KafkaFlags{Kafka: cfg.Kafka.Kafka}
}

// NewApplication wires the replicator on boot (made by service.NewBoot
// with cfg.Boot(), not yet connected): it connects to Kafka, opens the
// sink of SINK and returns the service to run. What it acquires is
// released by boot.Close, also after an error.
func (cfg *ReplicatorConfig) NewApplication(ctx context.Context, boot *service.Boot) (*service.Application, error) {
	if err := boot.Connect(ctx); err != nil {
		return nil, err
	}
	log, kcfg := boot.Log, boot.Kafka
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	boot.Defer(cancel)

	r := &replicator.Replicator{Client: boot.Client, Kafka: kcfg, Log: log}
	var tasks []service.Task
	switch *cfg.Sink {
	case "kafka":
		if *cfg.TargetBrokers == "" {
			return nil, errors.New("SINK=kafka needs TARGET_BROKERS")
		}
		target := kcfg
		target.Brokers = config.List(*cfg.TargetBrokers)
		// The target cluster has security settings of its own
		// (TARGET_KAFKA_SECURITY_PROTOCOL, ...), PLAINTEXT by default.
		var err error
		if target.Security, err = cfg.TargetSecurity.Security(); err != nil {
			return nil, err
		}
		sink, err := replicator.NewKafkaSink(startCtx, replicator.KafkaSinkConfig{
			Target: target, Source: kcfg, CheckpointTopic: *cfg.CheckpointTopic, TransactionalID: *cfg.TransactionalID,
		})
		if err != nil {
			return nil, err
		}
		boot.DeferClose(sink)
		r.Sink, r.Source = sink, replicator.Source{Snapshots: true, Events: *cfg.MirrorEvents}
	case "postgres":
		if *cfg.PostgresURL == "" {
			return nil, errors.New("SINK=postgres needs POSTGRES_URL")
		}
		// The table holds live profiles in clear: the sink opens the
		// sealed snapshots with the profiles' data keys. (The Kafka sink
		// copies records as they are, ciphertext included.)
		if err := boot.OpenKeys(cfg.Kafka.PII); err != nil {
			return nil, err
		}
		tasks = append(tasks, boot.RunKeys)
		sink, err := replicator.NewPostgresSink(startCtx, *cfg.PostgresURL, boot.Codec, log)
		if err != nil {
			return nil, err
		}
		boot.Defer(sink.Close)
		if *cfg.ResetPositions {
			n, err := sink.Reset(startCtx)
			if err != nil {
				return nil, err
			}
			log.Warn("positions reset: replaying the snapshots from offset 0", "positions_deleted", n)
		}
		r.Sink, r.Source = sink, replicator.Source{Snapshots: true}
	case "clear":
		// The topic holds live profiles in clear, like the postgres table:
		// the sink opens the sealed snapshots with the profiles' data keys.
		if err := boot.OpenKeys(cfg.Kafka.PII); err != nil {
			return nil, err
		}
		tasks = append(tasks, boot.RunKeys)
		ccfg := replicator.ClearSinkConfig{
			Kafka: kcfg, Topic: *cfg.ClearTopic, Codec: boot.Codec, Log: log,
			MaxCompactionLag: *cfg.ClearMaxCompactionLag, DeleteRetention: *cfg.ClearDeleteRetention,
			CheckpointTopic: *cfg.CheckpointTopic, TransactionalID: *cfg.TransactionalID,
		}
		if ccfg.CheckpointTopic == defaultCheckpointTopic {
			ccfg.CheckpointTopic = "" // the clear sink's own default
		}
		if ccfg.TransactionalID == defaultTransactionalID {
			ccfg.TransactionalID = ""
		}
		sink, err := replicator.NewClearSink(startCtx, ccfg)
		if err != nil {
			return nil, err
		}
		boot.DeferClose(sink)
		r.Sink, r.Source = sink, replicator.Source{Snapshots: true}
		tasks = append(tasks, sink.Run)
	default:
		return nil, fmt.Errorf("SINK must be kafka, postgres or clear, not %q", *cfg.Sink)
	}

	var health httpx.Health
	health.Check("replicator", r.Ready)
	router := service.NewRouter(log, &health, cfg.Common.AccessLogOption())
	a := cfg.Common.Application(log, router, append(tasks, r.Run)...)
	a.Starting = []any{"kafka_security", kcfg.Security, "http_addr", *cfg.Common.HTTPAddr, "sink", *cfg.Sink, "topics", r.Topics(1), "brokers", kcfg.Brokers}
	return a, nil
}
