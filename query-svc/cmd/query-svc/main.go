// Command query-svc serves GET /api/profile/{uid}, its /history and GET
// /api/search from a Pebble view of the partitions it owns in its consumer
// group (snapshots, email index and event log), and forwards requests for
// other partitions to their owners. With REPLICA_MODE=full it materializes
// every partition and never forwards. Any instance also serves the change
// stream GET /api/changes, straight from the snapshot topic.
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
	"profiles/platform/pii"
	"profiles/platform/routing"
	"profiles/platform/service"
	"profiles/query-svc/internal/app"
	"profiles/query-svc/internal/changes"
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
	api := service.RegisterAPIFlags(fs)
	kflags := kafkax.RegisterFlags(fs)
	piiFlags := pii.RegisterFlags(fs)
	dataDir := config.String(fs, "data-dir", "DATA_DIR", ".data/query", "directory of the Pebble view (a cache: safe to delete)")
	maxWait := config.Duration(fs, "max-wait", "MAX_WAIT", 10*time.Second, "longest a GET or search with minVersion waits for the view")
	mode := config.String(fs, "replica-mode", "REPLICA_MODE", "partitioned", "partitioned (own some partitions, forward the rest) or full (materialize every partition)")
	group := config.String(fs, "group", "QUERY_GROUP", "profiles-query", "consumer group of the query-svc instances")
	session := config.Duration(fs, "session-timeout", "SESSION_TIMEOUT", 10*time.Second, "how long a silent instance keeps its partitions")
	switchGrace := config.Duration(fs, "switch-grace", "SWITCH_GRACE", 30*time.Second, "how long the old snapshot generation keeps running after a switch, for instances that still route by it")
	routeWait := config.Duration(fs, "route-wait", "ROUTE_WAIT", 15*time.Second, "longest a request waits for an owner of its partition")
	cacheMB := config.Int(fs, "view-cache-mb", "VIEW_CACHE_MB", view.DefaultCacheSize>>20, "Pebble block cache of the view, in MiB")
	streamMax := config.Int(fs, "stream-max", "STREAM_MAX", 100, "most change streams (GET /api/changes) open at once on this instance")
	_ = fs.Parse(os.Args[1:])

	log := common.Logger("query-svc")
	kcfg, err := kflags.Config()
	if err != nil {
		return err
	}
	kek, err := piiFlags.KEK(log)
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
	sec, err := api.Security(ctx, log)
	if err != nil {
		return err
	}

	client, err := kafkax.Connect(ctx, kcfg, "query-svc")
	if err != nil {
		return err
	}
	defer client.Close()
	keyring, err := pii.NewKeyring(kcfg, "query-svc", kek, log)
	if err != nil {
		return err
	}
	defer keyring.Close()
	codec := pii.NewCodec(kek, keyring)

	store, err := view.Open(*dataDir, vfs.Default, kcfg.Partitions, codec, view.Options{CacheSize: int64(*cacheMB) << 20})
	if err != nil {
		return err
	}
	defer store.Close()

	dlq, err := kafkax.NewDeadLetters(kcfg, "query-svc")
	if err != nil {
		return err
	}
	defer dlq.Close()
	// The snapshot and email index topics come from the current snapshot
	// generation (the control topic), and so does the consumer group: at a
	// switch the next generation catches up in a group of its own while
	// this one keeps answering (see follower.Generations).
	applier := follower.Applier{Codec: codec, Store: store, EventsTopic: kcfg.EventsTopic, DeadLetters: dlq, Log: log}
	var gens *follower.Generations
	build := func(n int, a follower.Applier, handle func(context.Context, string, int32, []*sarama.ConsumerMessage) error) (follower.Follower, error) {
		if *mode == "full" {
			return &follower.ReplicaFollower{Replica: &follower.Replica{Applier: a, Client: client}, Self: self}, nil
		}
		gcfg := kcfg.ForGeneration(n)
		opts := kafkax.GroupOptions{
			Group: kafkax.GenerationGroup(*group, n), Topics: []string{gcfg.SnapshotsTopic, gcfg.EmailIndexTopic, kcfg.EventsTopic}, Self: self,
			SessionTimeout: *session, Start: a.Start, Handle: handle, Assigned: gens.Assigned,
		}
		if static {
			opts.InstanceID = self.ID
		}
		g, err := kafkax.NewGroup(client, opts, log.With("snapshot_generation", n))
		if err != nil {
			return nil, err
		}
		return &follower.GroupFollower{Group: g, Config: kcfg.GroupConfig("query-svc", opts), Brokers: kcfg.Brokers}, nil
	}
	gens = follower.NewGenerations(client, kcfg, applier, build, log)
	gens.SetGrace(*switchGrace)
	var health httpx.Health
	health.Check("view", gens.Ready)

	mux := service.NewRouter(log, &health)
	sec.Install(mux)
	ports.HTTP{
		Log:         log,
		Routing:     routing.Routing{Router: gens, Self: self, Wait: *routeWait, Log: log, Sign: sec.Sign},
		PartitionOf: store.Partition,
		EmailKey:    codec,
		Queries: ports.Queries{
			GetProfile:     app.GetProfileHandler{View: store, NotFound: view.ErrNotFound, MaxWait: *maxWait},
			SearchProfiles: app.SearchProfilesHandler{View: store, NotFound: view.ErrNotFound, MaxWait: *maxWait},
			GetHistory:     app.GetHistoryHandler{View: store, MaxWait: *maxWait},
		},
	}.Register(mux)
	ports.Admin{Views: gens, Instance: self.ID}.Register(mux)
	// GET /api/changes: any instance streams the serving generation's
	// snapshot topic, each stream with a Kafka client of its own (see
	// changes.Kafka). Streams end at shutdown (ctx), so that the graceful
	// shutdown does not wait for them.
	(&ports.Changes{
		Codec: codec,
		Source: changes.Kafka{NewClient: func() (sarama.Client, error) {
			sc := kcfg.Sarama("query-svc-changes")
			sc.Metadata.Full = false
			return sarama.NewClient(kcfg.Brokers, sc)
		}},
		Generation: gens.Generation,
		Topic:      func(n int) string { return kcfg.ForGeneration(n).SnapshotsTopic },
		Max:        *streamMax,
		Stop:       ctx.Done(),
		Instance:   self.ID,
		Log:        log,
	}).Register(mux)
	mux.HandleFunc("/debug/assignment", routing.DebugHandler(self, *mode, gens, func() map[string]any {
		held, _ := store.Held()
		n := gens.Generation()
		counts := map[int32]int{}
		for _, p := range held[kcfg.ForGeneration(n).SnapshotsTopic] {
			counts[p], _ = store.Count(p)
		}
		return map[string]any{"held": held, "profilesByPartition": counts, "generation": n}
	})).Methods(http.MethodGet)

	log.Info("starting", "kafka_security", kcfg.Security, "http_addr", *common.HTTPAddr, "self", self, "mode", *mode, "data_dir", *dataDir, "brokers", kcfg.Brokers, "control", kcfg.ControlTopic,
		"auth_mode", sec.Auth.Mode, "signed_internal_requests", sec.Auth.Signer != nil)
	return service.Run(ctx, log, *common.HTTPAddr, common.CORS(mux), *common.ShutdownGrace, gens.Run, sec.Task, keyring.Run)
}
