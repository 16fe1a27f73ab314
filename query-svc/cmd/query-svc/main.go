// Command query-svc serves GET /api/profile/{uid} and GET /api/search from
// a Pebble view that it keeps in step with the snapshot topic.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/service"
	"profiles/query-svc/internal/app"
	"profiles/query-svc/internal/follower"
	"profiles/query-svc/internal/ports"
	"profiles/query-svc/internal/view"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "query-svc:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("query-svc", flag.ExitOnError)
	common := service.RegisterFlags(fs, ":8082")
	kflags := kafkax.RegisterFlags(fs)
	dataDir := config.String(fs, "data-dir", "DATA_DIR", ".data/query", "directory of the Pebble view (a cache: safe to delete)")
	maxWait := config.Duration(fs, "max-wait", "MAX_WAIT", 10*time.Second, "longest a GET with minVersion waits for the view")
	_ = fs.Parse(os.Args[1:])

	log := common.Logger("query-svc")
	kcfg, err := kflags.Config()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := kafkax.EnsureTopics(startCtx, kcfg, "query-svc"); err != nil {
		return err
	}
	client, err := sarama.NewClient(kcfg.Brokers, kcfg.Sarama("query-svc"))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer client.Close()

	store, err := view.Open(*dataDir, vfs.Default)
	if err != nil {
		return err
	}
	defer store.Close()

	follow := follower.New(client, kcfg.SnapshotsTopic, store, log)
	var health httpx.Health
	health.Check("view", follow.Ready)

	router := service.NewRouter(log, &health)
	ports.HTTP{Log: log, Queries: ports.Queries{
		GetProfile:     app.GetProfileHandler{View: store, NotFound: view.ErrNotFound, MaxWait: *maxWait},
		SearchProfiles: app.SearchProfilesHandler{View: store},
	}}.Register(router)

	log.Info("starting", "http_addr", *common.HTTPAddr, "data_dir", *dataDir, "topic", kcfg.SnapshotsTopic, "brokers", kcfg.Brokers)
	return service.Run(ctx, log, *common.HTTPAddr, router, *common.ShutdownGrace, follow.Run)
}
