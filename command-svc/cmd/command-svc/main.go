// Command command-svc accepts POST, PUT and DELETE on /api/profile, checks
// them against the current state, and appends events to the event log.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/google/uuid"

	"profiles/command-svc/internal/adapters"
	"profiles/command-svc/internal/app"
	"profiles/command-svc/internal/ports"
	"profiles/command-svc/internal/state"
	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/service"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "command-svc:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("command-svc", flag.ExitOnError)
	common := service.RegisterFlags(fs, ":8081")
	kflags := kafkax.RegisterFlags(fs)
	queryURL := config.String(fs, "query-url", "QUERY_URL", "http://127.0.0.1:8082", "base URL of query-svc, asked for read-your-writes")
	visibility := config.Duration(fs, "visibility-timeout", "VISIBILITY_TIMEOUT", 10*time.Second, "longest a write waits for readers to see it before answering 202")
	maxBody := config.Int(fs, "max-body", "MAX_BODY_BYTES", httpx.DefaultMaxBody, "largest accepted request body, in bytes")
	_ = fs.Parse(os.Args[1:])

	log := common.Logger("command-svc")
	kcfg, err := kflags.Config()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := kafkax.EnsureTopics(startCtx, kcfg, "command-svc"); err != nil {
		return err
	}
	client, err := sarama.NewClient(kcfg.Brokers, kcfg.Sarama("command-svc"))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer client.Close()
	pub, err := kafkax.NewPublisher(kcfg, "command-svc", watermill.NewSlogLogger(log))
	if err != nil {
		return err
	}
	defer pub.Close()

	states := state.NewStore()
	deps := app.Deps{
		States:     states,
		Log:        adapters.EventLog{Publisher: pub, Topic: kcfg.EventsTopic, Source: "/command-svc"},
		Visibility: adapters.QueryVisibility{BaseURL: *queryURL, Client: &http.Client{}, Timeout: *visibility},
		NewID:      uuid.NewString,
		Now:        time.Now,
	}
	var health httpx.Health
	health.Check("state", states.Ready)
	router := service.NewRouter(log, &health)
	ports.HTTP{Log: log, MaxBody: int64(*maxBody), Commands: ports.Commands{
		CreateProfile: app.CreateProfileHandler{Deps: deps},
		ChangeProfile: app.ChangeProfileHandler{Deps: deps},
		DeleteProfile: app.DeleteProfileHandler{Deps: deps},
	}}.Register(router)

	follow := func(ctx context.Context) error { return states.Follow(ctx, client, kcfg.EventsTopic, log) }
	log.Info("starting", "http_addr", *common.HTTPAddr, "events", kcfg.EventsTopic, "query_url", *queryURL, "brokers", kcfg.Brokers)
	return service.Run(ctx, log, *common.HTTPAddr, router, *common.ShutdownGrace, follow)
}
