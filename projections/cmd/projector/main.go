// Command projector folds the event log into the compacted snapshot topic.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"

	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/service"
	"profiles/projections/projector"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "projector:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("projector", flag.ExitOnError)
	common := service.RegisterFlags(fs, ":8083")
	kflags := kafkax.RegisterFlags(fs)
	group := config.String(fs, "group", "PROJECTOR_GROUP", "profiles-projector", "consumer group of the projector")
	_ = fs.Parse(os.Args[1:])

	log := common.Logger("projector")
	kcfg, err := kflags.Config()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := kafkax.EnsureTopics(startCtx, kcfg, "projector"); err != nil {
		return err
	}
	client, err := sarama.NewClient(kcfg.Brokers, kcfg.Sarama("projector"))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer client.Close()

	wlog := watermill.NewSlogLogger(log)
	pub, err := kafkax.NewPublisher(kcfg, "projector", wlog)
	if err != nil {
		return err
	}
	defer pub.Close()
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers:               kcfg.Brokers,
		ConsumerGroup:         *group,
		OverwriteSaramaConfig: kcfg.Sarama("projector"),
	}, wlog)
	if err != nil {
		return err
	}
	defer sub.Close()

	dlq, err := kafkax.NewDeadLetters(kcfg, "projector")
	if err != nil {
		return err
	}
	defer dlq.Close()

	p := &projector.Projector{
		DeadLetters: dlq,
		Subscriber:  sub, Publisher: pub, Client: client,
		EventsTopic: kcfg.EventsTopic, SnapshotsTopic: kcfg.SnapshotsTopic, EmailIndexTopic: kcfg.EmailIndexTopic,
		State: projector.NewState(), Log: log,
	}
	var restored atomic.Bool
	var health httpx.Health
	health.Check("state", func() error {
		if !restored.Load() {
			return projector.ErrNotRestored
		}
		return nil
	})
	router := service.NewRouter(log, &health)

	fold := func(ctx context.Context) error {
		start := time.Now()
		n, err := p.State.Restore(ctx, client, kcfg.SnapshotsTopic, nil)
		if err != nil {
			return err
		}
		restored.Store(true)
		log.Info("state restored from the snapshot topic", "records", n, "profiles", p.State.Len(), "took", time.Since(start))
		return p.Run(ctx)
	}
	log.Info("starting", "http_addr", *common.HTTPAddr, "events", kcfg.EventsTopic, "snapshots", kcfg.SnapshotsTopic, "group", *group)
	return service.Run(ctx, log, *common.HTTPAddr, router, *common.ShutdownGrace, fold)
}
