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

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"

	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
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
	piiFlags := pii.RegisterFlags(fs)
	group := config.String(fs, "group", "PROJECTOR_GROUP", "profiles-projector", "consumer group of the projector")
	_ = fs.Parse(os.Args[1:])

	log := common.Logger("projector")
	kcfg, err := kflags.Config()
	if err != nil {
		return err
	}
	kek, err := piiFlags.KEK(log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	client, err := kafkax.Connect(ctx, kcfg, "projector")
	if err != nil {
		return err
	}
	defer client.Close()
	keyring, err := pii.NewKeyring(kcfg, "projector", kek, log)
	if err != nil {
		return err
	}
	defer keyring.Close()
	codec := pii.NewCodec(kek, keyring)

	wlog := watermill.NewSlogLogger(log)
	pub, err := kafkax.NewPublisher(kcfg, "projector", wlog)
	if err != nil {
		return err
	}
	defer pub.Close()
	dlq, err := kafkax.NewDeadLetters(kcfg, "projector")
	if err != nil {
		return err
	}
	defer dlq.Close()

	// restored is the generation whose state has been restored and which
	// the projector folds into now (0 while none is).
	var restored atomic.Int64
	var health httpx.Health
	health.Check("state", func() error {
		if restored.Load() == 0 {
			return projector.ErrNotRestored
		}
		return nil
	})
	router := service.NewRouter(log, &health)

	// Each snapshot generation has its own consumer group, whose offsets
	// replay sets to the generation's cutoff: at a switch the projector
	// stops folding into the old generation's topics and continues the new
	// one's exactly where replay stopped.
	fold := func(ctx context.Context, n int, ready func()) error {
		gcfg := kcfg.ForGeneration(n)
		ggroup := kafkax.GenerationGroup(*group, n)
		ready() // one projector per generation: stop the old one first
		restored.Store(0)
		if err := kafkax.EnsureGeneration(ctx, kcfg, "projector", n); err != nil {
			return err
		}
		sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
			Brokers:               kcfg.Brokers,
			ConsumerGroup:         ggroup,
			OverwriteSaramaConfig: kcfg.Sarama("projector"),
		}, wlog)
		if err != nil {
			return err
		}
		defer sub.Close()
		p := &projector.Projector{
			DeadLetters: dlq,
			Subscriber:  sub, Publisher: pub, Client: client,
			EventsTopic: kcfg.EventsTopic, SnapshotsTopic: gcfg.SnapshotsTopic, EmailIndexTopic: gcfg.EmailIndexTopic,
			State: projector.NewState(), Log: log.With("generation", n),
			Codec: codec,
		}
		start := time.Now()
		records, err := p.State.Restore(ctx, codec, client, gcfg.SnapshotsTopic, nil)
		if err != nil {
			return err
		}
		restored.Store(int64(n))
		log.Info("state restored from the snapshot topic", "generation", n, "snapshots", gcfg.SnapshotsTopic,
			"group", ggroup, "records", records, "profiles", p.State.Len(), "took", time.Since(start))
		return p.Run(ctx)
	}
	follow := func(ctx context.Context) error {
		return kafkax.FollowGenerations(ctx, client, kcfg.ControlTopic, log, fold)
	}
	log.Info("starting", "kafka_security", kcfg.Security, "http_addr", *common.HTTPAddr, "events", kcfg.EventsTopic, "control", kcfg.ControlTopic, "group", *group)
	return service.Run(ctx, log, *common.HTTPAddr, router, *common.ShutdownGrace, follow, keyring.Run)
}
