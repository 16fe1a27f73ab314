// Command replicator feeds another system from the profiles topics: another
// Kafka cluster (SINK=kafka) or PostgreSQL (SINK=postgres). Run one process
// per sink.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/platform/service"
	"profiles/projections/replicator"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "replicator:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("replicator", flag.ExitOnError)
	common := service.RegisterFlags(fs, ":8084")
	kflags := kafkax.RegisterFlags(fs)
	piiFlags := pii.RegisterFlags(fs)
	sinkName := config.String(fs, "sink", "SINK", "kafka", "kafka (mirror to TARGET_BROKERS) or postgres (POSTGRES_URL)")
	targetBrokers := config.String(fs, "target-brokers", "TARGET_BROKERS", "", "kafka sink: comma-separated bootstrap servers of the target cluster")
	targetSecurity := kafkax.RegisterSecurityFlags(fs, "target-kafka-", "TARGET_KAFKA_")
	mirrorEvents := config.Bool(fs, "mirror-events", "MIRROR_EVENTS", false, "kafka sink: mirror the event log too, not only the snapshots")
	checkpoints := config.String(fs, "checkpoint-topic", "CHECKPOINT_TOPIC", "profile-mirror-checkpoints", "kafka sink: compacted topic on the target cluster that holds the mirror's positions")
	txnID := config.String(fs, "transactional-id", "TRANSACTIONAL_ID", "profiles-mirror", "kafka sink: transactional id of the mirror's producer on the target cluster (one per mirror)")
	postgresURL := config.String(fs, "postgres-url", "POSTGRES_URL", "", "postgres sink: connection URL, e.g. postgres://user@127.0.0.1:5432/db?sslmode=disable")
	resetPositions := config.Bool(fs, "reset-positions", "RESET_POSITIONS", false, "postgres sink: delete the stored positions at start, so that the snapshots are replayed from offset 0 (harmless: the table ends unchanged)")
	_ = fs.Parse(os.Args[1:])

	log := common.Logger("replicator")
	kcfg, err := kflags.Config()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	client, err := kafkax.Connect(ctx, kcfg, "replicator")
	if err != nil {
		return err
	}
	defer client.Close()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	r := &replicator.Replicator{Client: client, Kafka: kcfg, Log: log}
	var tasks []service.Task
	switch *sinkName {
	case "kafka":
		if *targetBrokers == "" {
			return errors.New("SINK=kafka needs TARGET_BROKERS")
		}
		target := kcfg
		target.Brokers = config.List(*targetBrokers)
		// The target cluster has security settings of its own
		// (TARGET_KAFKA_SECURITY_PROTOCOL, ...), PLAINTEXT by default.
		if target.Security, err = targetSecurity.Security(); err != nil {
			return err
		}
		sink, err := replicator.NewKafkaSink(startCtx, replicator.KafkaSinkConfig{
			Target: target, Source: kcfg, CheckpointTopic: *checkpoints, TransactionalID: *txnID,
		})
		if err != nil {
			return err
		}
		defer sink.Close()
		r.Sink, r.Source = sink, replicator.Source{Snapshots: true, Events: *mirrorEvents}
	case "postgres":
		if *postgresURL == "" {
			return errors.New("SINK=postgres needs POSTGRES_URL")
		}
		// The table holds live profiles in clear: the sink opens the
		// sealed snapshots with the profiles' data keys. (The Kafka sink
		// copies records as they are, ciphertext included.)
		kek, err := piiFlags.KEK(log)
		if err != nil {
			return err
		}
		keyring, err := pii.NewKeyring(kcfg, "replicator", kek, log)
		if err != nil {
			return err
		}
		defer keyring.Close()
		codec := pii.NewCodec(kek, keyring)
		tasks = append(tasks, keyring.Run)
		sink, err := replicator.NewPostgresSink(startCtx, *postgresURL, codec, log)
		if err != nil {
			return err
		}
		defer sink.Close()
		if *resetPositions {
			n, err := sink.Reset(startCtx)
			if err != nil {
				return err
			}
			log.Warn("positions reset: replaying the snapshots from offset 0", "positions_deleted", n)
		}
		r.Sink, r.Source = sink, replicator.Source{Snapshots: true}
	default:
		return fmt.Errorf("SINK must be kafka or postgres, not %q", *sinkName)
	}

	var health httpx.Health
	health.Check("replicator", r.Ready)
	router := service.NewRouter(log, &health)
	log.Info("starting", "kafka_security", kcfg.Security, "http_addr", *common.HTTPAddr, "sink", *sinkName, "topics", r.Topics(1), "brokers", kcfg.Brokers)
	return service.Run(ctx, log, *common.HTTPAddr, router, *common.ShutdownGrace, append(tasks, r.Run)...)
}
