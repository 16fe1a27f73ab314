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
// settings serve only SINK=postgres (see NewApplication).
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
}

// RegisterReplicatorFlags registers the replicator's settings on fs.
func RegisterReplicatorFlags(fs *flag.FlagSet) *ReplicatorConfig {
	return &ReplicatorConfig{
		Common:          service.RegisterFlags(fs, ":8084"),
		Kafka:           service.RegisterKafkaFlags(fs),
		Sink:            config.String(fs, "sink", "SINK", "kafka", "kafka (mirror to TARGET_BROKERS) or postgres (POSTGRES_URL)"),
		TargetBrokers:   config.String(fs, "target-brokers", "TARGET_BROKERS", "", "kafka sink: comma-separated bootstrap servers of the target cluster"),
		TargetSecurity:  kafkax.RegisterSecurityFlags(fs, "target-kafka-", "TARGET_KAFKA_"),
		MirrorEvents:    config.Bool(fs, "mirror-events", "MIRROR_EVENTS", false, "kafka sink: mirror the event log too, not only the snapshots"),
		CheckpointTopic: config.String(fs, "checkpoint-topic", "CHECKPOINT_TOPIC", "profile-mirror-checkpoints", "kafka sink: compacted topic on the target cluster that holds the mirror's positions"),
		TransactionalID: config.String(fs, "transactional-id", "TRANSACTIONAL_ID", "profiles-mirror", "kafka sink: transactional id of the mirror's producer on the target cluster (one per mirror)"),
		PostgresURL:     config.String(fs, "postgres-url", "POSTGRES_URL", "", "postgres sink: connection URL, e.g. postgres://user@127.0.0.1:5432/db?sslmode=disable"),
		ResetPositions:  config.Bool(fs, "reset-positions", "RESET_POSITIONS", false, "postgres sink: delete the stored positions at start, so that the snapshots are replayed from offset 0 (harmless: the table ends unchanged)"),
	}
}

// Boot returns the Kafka settings the replicator boots with: those of
// Kafka without the personal data ones, since only SINK=postgres loads the
// key-encryption key (NewApplication does, after connecting).
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
	default:
		return nil, fmt.Errorf("SINK must be kafka or postgres, not %q", *cfg.Sink)
	}

	var health httpx.Health
	health.Check("replicator", r.Ready)
	router := service.NewRouter(log, &health, cfg.Common.AccessLogOption())
	a := cfg.Common.Application(log, router, append(tasks, r.Run)...)
	a.Starting = []any{"kafka_security", kcfg.Security, "http_addr", *cfg.Common.HTTPAddr, "sink", *cfg.Sink, "topics", r.Topics(1), "brokers", kcfg.Brokers}
	return a, nil
}
