package frontdoor

import (
	"context"
	"flag"
	"fmt"
	"net/http"

	"profiles/deploy/openapi"
	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/service"
)

// Name is the front door's name, in its logs.
const Name = "frontdoor"

// Config is the front door's configuration: the settings every service
// has, and the upstreams.
type Config struct {
	Common     *service.Flags
	CommandURL *string
	QueryURL   *string
}

// RegisterFlags registers the front door's settings on fs.
func RegisterFlags(fs *flag.FlagSet) *Config {
	return &Config{
		Common:     service.RegisterFlags(fs, ":8080"),
		CommandURL: config.String(fs, "command-url", "COMMAND_URL", "http://127.0.0.1:8081", "base URL of command-svc, or a comma-separated list of the base URLs of its instances"),
		QueryURL:   config.String(fs, "query-url", "QUERY_URL", "http://127.0.0.1:8082", "base URL of query-svc, or a comma-separated list of the base URLs of its instances"),
	}
}

// NewApplication wires the front door (a Boot without Kafka: only its
// Log is used): the API (New) under /api/, with the task that keeps its
// routing tables (FrontDoor.Run), the OpenAPI document and the API page
// (/docs), and readiness
// from the upstreams. ctx ends the change streams, so that they
// do not hold the shutdown for SHUTDOWN_GRACE.
func (cfg *Config) NewApplication(ctx context.Context, boot *service.Boot) (*service.Application, error) {
	log, common := boot.Log, cfg.Common
	cmdURLs, err := ParseURLs(*cfg.CommandURL)
	if err != nil {
		return nil, fmt.Errorf("COMMAND_URL: %w", err)
	}
	qryURLs, err := ParseURLs(*cfg.QueryURL)
	if err != nil {
		return nil, fmt.Errorf("QUERY_URL: %w", err)
	}
	api, err := New(cmdURLs, qryURLs, log, StopStreams(ctx.Done()))
	if err != nil {
		return nil, err
	}

	var health httpx.Health
	// Ready when at least one instance of each service is: the front door
	// fails over from the others.
	health.Check("command-svc", AnyReady(cmdURLs))
	health.Check("query-svc", AnyReady(qryURLs))
	router := service.NewRouter(log, &health, common.AccessLogOption())
	router.HandleFunc("/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(openapi.Spec)
	}).Methods(http.MethodGet)
	// The API page (Swagger UI, vendored and embedded) and its files.
	docs := DocsHandler()
	router.Handle("/docs", docs).Methods(http.MethodGet, http.MethodHead)
	router.PathPrefix("/docs/").Handler(docs).Methods(http.MethodGet, http.MethodHead)
	router.PathPrefix("/api/").Handler(api)

	// CORS preflights are answered here; security headers come with every
	// response (service.Run). Tokens are not checked here but by every
	// command-svc and query-svc instance, whose ports are reachable without
	// the front door.
	a := common.Application(log, common.CORS(router), api.Run)
	a.Starting = []any{"http_addr", *common.HTTPAddr,
		"command_urls", config.List(*cfg.CommandURL), "query_urls", config.List(*cfg.QueryURL)}
	return a, nil
}
