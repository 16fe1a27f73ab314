// Command query-svc serves GET /api/profile/{uid} and GET /api/search from
// a Pebble view of the partitions it owns in its consumer group, and
// forwards requests for other partitions to their owners. With
// REPLICA_MODE=full it materializes every partition and never forwards.
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
	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/routing"
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
	maxWait := config.Duration(fs, "max-wait", "MAX_WAIT", 10*time.Second, "longest a GET or search with minVersion waits for the view")
	mode := config.String(fs, "replica-mode", "REPLICA_MODE", "partitioned", "partitioned (own some partitions, forward the rest) or full (materialize every partition)")
	group := config.String(fs, "group", "QUERY_GROUP", "profiles-query", "consumer group of the query-svc instances")
	session := config.Duration(fs, "session-timeout", "SESSION_TIMEOUT", 10*time.Second, "how long a silent instance keeps its partitions")
	routeWait := config.Duration(fs, "route-wait", "ROUTE_WAIT", 15*time.Second, "longest a request waits for an owner of its partition")
	_ = fs.Parse(os.Args[1:])

	log := common.Logger("query-svc")
	kcfg, err := kflags.Config()
	if err != nil {
		return err
	}
	self, static, err := common.Self("query-svc")
	if err != nil {
		return err
	}
	if *mode != "partitioned" && *mode != "full" {
		return fmt.Errorf("REPLICA_MODE must be partitioned or full, not %q", *mode)
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

	store, err := view.Open(*dataDir, vfs.Default, kcfg.Partitions)
	if err != nil {
		return err
	}
	defer store.Close()

	dlq, err := kafkax.NewDeadLetters(kcfg, "query-svc")
	if err != nil {
		return err
	}
	defer dlq.Close()
	applier := follower.Applier{Store: store, SnapshotsTopic: kcfg.SnapshotsTopic, IndexTopic: kcfg.EmailIndexTopic, DeadLetters: dlq, Log: log}
	var (
		health     httpx.Health
		router     routing.Router
		membership routing.Membership
		consume    service.Task
	)
	if *mode == "full" {
		replica := &follower.Replica{Applier: applier, Client: client}
		health.Check("view", replica.Ready)
		router = routing.Local{Self: self, Serving: replica.Serving}
		consume = replica.Run
	} else {
		opts := kafkax.GroupOptions{
			Group: *group, Topics: []string{kcfg.SnapshotsTopic, kcfg.EmailIndexTopic}, Self: self,
			SessionTimeout: *session, Start: applier.Start, Handle: applier.Handle, Assigned: applier.Assigned,
		}
		if static {
			opts.InstanceID = self.ID
		}
		g, err := kafkax.NewGroup(client, opts, log)
		if err != nil {
			return err
		}
		health.Check("view", g.Ready)
		router, membership = g, g
		gcfg := kcfg.GroupConfig("query-svc", opts)
		consume = func(ctx context.Context) error { return g.Run(ctx, gcfg, kcfg.Brokers) }
	}

	mux := service.NewRouter(log, &health)
	ports.HTTP{
		Log:         log,
		Routing:     routing.Routing{Router: router, Self: self, Wait: *routeWait, Log: log},
		PartitionOf: store.Partition,
		Queries: ports.Queries{
			GetProfile:     app.GetProfileHandler{View: store, NotFound: view.ErrNotFound, MaxWait: *maxWait},
			SearchProfiles: app.SearchProfilesHandler{View: store, NotFound: view.ErrNotFound, MaxWait: *maxWait},
		},
	}.Register(mux)
	mux.HandleFunc("/debug/assignment", routing.DebugHandler(self, *mode, membership, func() map[string]any {
		held, _ := store.Held()
		counts := map[int32]int{}
		for _, p := range held[kcfg.SnapshotsTopic] {
			counts[p], _ = store.Count(p)
		}
		return map[string]any{"held": held, "profilesByPartition": counts}
	})).Methods(http.MethodGet)

	log.Info("starting", "http_addr", *common.HTTPAddr, "self", self, "mode", *mode, "data_dir", *dataDir, "brokers", kcfg.Brokers)
	return service.Run(ctx, log, *common.HTTPAddr, mux, *common.ShutdownGrace, consume)
}
