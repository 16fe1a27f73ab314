// Command frontdoor serves the whole API on one address, routing reads to
// query-svc and writes to command-svc, spread over their instances.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"profiles/deploy/frontdoor"
	"profiles/deploy/openapi"
	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/service"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "frontdoor:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("frontdoor", flag.ExitOnError)
	common := service.RegisterFlags(fs, ":8080")
	commandURL := config.String(fs, "command-url", "COMMAND_URL", "http://127.0.0.1:8081", "base URL of command-svc, or a comma-separated list of the base URLs of its instances")
	queryURL := config.String(fs, "query-url", "QUERY_URL", "http://127.0.0.1:8082", "base URL of query-svc, or a comma-separated list of the base URLs of its instances")
	_ = fs.Parse(os.Args[1:])

	log := common.Logger("frontdoor")
	cmdURLs, err := frontdoor.ParseURLs(*commandURL)
	if err != nil {
		return fmt.Errorf("COMMAND_URL: %w", err)
	}
	qryURLs, err := frontdoor.ParseURLs(*queryURL)
	if err != nil {
		return fmt.Errorf("QUERY_URL: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Change streams end at shutdown instead of holding it for SHUTDOWN_GRACE.
	api, err := frontdoor.New(cmdURLs, qryURLs, log, frontdoor.StopStreams(ctx.Done()))
	if err != nil {
		return err
	}

	var health httpx.Health
	// Ready when at least one instance of each service is: the front door
	// fails over from the others.
	health.Check("command-svc", frontdoor.AnyReady(cmdURLs))
	health.Check("query-svc", frontdoor.AnyReady(qryURLs))
	router := service.NewRouter(log, &health)
	router.HandleFunc("/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(openapi.Spec)
	}).Methods(http.MethodGet)
	router.PathPrefix("/api/").Handler(api)

	log.Info("starting", "http_addr", *common.HTTPAddr,
		"command_urls", config.List(*commandURL), "query_urls", config.List(*queryURL))
	// CORS preflights are answered here; security headers come with every
	// response (service.Run). Tokens are not checked here but by every
	// command-svc and query-svc instance, whose ports are reachable without
	// the front door.
	return service.Run(ctx, log, *common.HTTPAddr, common.CORS(router), *common.ShutdownGrace)
}
