// Package service is query-svc's composition root: its configuration and
// NewApplication, which wires the Pebble view, the snapshot generations
// and their followers, the queries and the HTTP ports into what main runs.
package service

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/IBM/sarama"
	"github.com/cockroachdb/pebble/v2/vfs"

	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/routing"
	"profiles/platform/service"
	"profiles/platform/topology"
	"profiles/query-svc/internal/app"
	"profiles/query-svc/internal/changes"
	"profiles/query-svc/internal/follower"
	"profiles/query-svc/internal/ports"
	"profiles/query-svc/internal/view"
)

// Name is the service's name: in its logs, Kafka client ids and instance
// ids.
const Name = "query-svc"

// Config is query-svc's configuration: the settings every service has,
// and its own.
type Config struct {
	Common *service.Flags
	API    *service.APIFlags
	Kafka  *service.KafkaFlags

	DataDir        *string
	MaxWait        *time.Duration
	Mode           *string
	Group          *string
	SessionTimeout *time.Duration
	SwitchGrace    *time.Duration
	RouteWait      *time.Duration
	CacheMB        *int
	ReserveMB      *int
	StreamMax      *int
	Standbys       *int
}

// RegisterFlags registers query-svc's settings on fs.
func RegisterFlags(fs *flag.FlagSet) *Config {
	return &Config{
		Common:         service.RegisterFlags(fs, ":8082"),
		API:            service.RegisterAPIFlags(fs),
		Kafka:          service.RegisterKafkaFlags(fs),
		DataDir:        config.String(fs, "data-dir", "DATA_DIR", ".data/query", "directory of the Pebble stores: view/, the view, and keys/, the keyring's (caches of Kafka: safe to delete)"),
		MaxWait:        config.Duration(fs, "max-wait", "MAX_WAIT", 10*time.Second, "longest a GET or search with minVersion waits for the view"),
		Mode:           config.String(fs, "replica-mode", "REPLICA_MODE", "partitioned", "partitioned (own some partitions, forward the rest) or full (materialize every partition)"),
		Group:          config.String(fs, "group", "QUERY_GROUP", "profiles-query", "consumer group of the query-svc instances"),
		SessionTimeout: config.Duration(fs, "session-timeout", "SESSION_TIMEOUT", 10*time.Second, "how long a silent instance keeps its partitions"),
		SwitchGrace:    config.Duration(fs, "switch-grace", "SWITCH_GRACE", 30*time.Second, "how long the old snapshot generation keeps running after a switch, for instances that still route by it"),
		RouteWait:      config.Duration(fs, "route-wait", "ROUTE_WAIT", 15*time.Second, "longest a request waits for an owner of its partition"),
		CacheMB:        config.Int(fs, "view-cache-mb", "VIEW_CACHE_MB", view.DefaultCacheSize>>20, "Pebble block cache of the view, in MiB"),
		ReserveMB:      config.Int(fs, "disk-reserve-mb", "DISK_RESERVE_MB", 64, "free space the view leaves on its disk, in MiB: below it the view applies nothing and the instance steps out of its group until space returns (0: no check)"),
		StreamMax:      config.Int(fs, "stream-max", "STREAM_MAX", 100, "most change streams (GET /api/changes) open at once on this instance"),
		Standbys:       config.Int(fs, "standbys", "STANDBYS", 1, "on how many instances besides its owner each partition's view is kept warm, so that a failover or rebalance reads only the tail (0: none; partitioned mode)"),
	}
}

// NewApplication wires query-svc on boot (made by service.NewBoot, not yet
// connected): it connects to Kafka, opens the view and returns the service
// to run. What it acquires is released by boot.Close, also after an error.
// ctx ends the change streams and the JWKS reloads.
func (cfg *Config) NewApplication(ctx context.Context, boot *service.Boot) (*service.Application, error) {
	log, common, mode := boot.Log, cfg.Common, *cfg.Mode
	self, static, err := common.Self(Name)
	if err != nil {
		return nil, err
	}
	if mode != "partitioned" && mode != "full" {
		return nil, fmt.Errorf("REPLICA_MODE must be partitioned or full, not %q", mode)
	}
	sec, err := cfg.API.Security(ctx, log)
	if err != nil {
		return nil, err
	}
	if err := boot.Connect(ctx); err != nil {
		return nil, err
	}
	kcfg, client := boot.Kafka, boot.Client

	// The view records the cluster and the event log it is built from: a
	// data directory that comes from elsewhere is emptied and rebuilt.
	data, err := boot.OpenDataDir(*cfg.DataDir)
	if err != nil {
		return nil, err
	}
	store, err := view.Open(data.Store("view"), vfs.Default, kcfg.Partitions, boot.Codec, view.Options{
		CacheSize: int64(*cfg.CacheMB) << 20, Reserve: uint64(max(*cfg.ReserveMB, 0)) << 20, Origin: data.Cluster + " " + kcfg.EventsTopic, Log: log})
	if err != nil {
		return nil, err
	}
	boot.DeferClose(store)

	dlq, err := topology.NewDeadLetters(kcfg, Name)
	if err != nil {
		return nil, err
	}
	boot.DeferClose(dlq)
	// The snapshot and email index topics come from the current snapshot
	// generation (the control topic), and so does the consumer group: at a
	// switch the next generation catches up in a group of its own while
	// this one keeps answering (see follower.Generations).
	applier := follower.Applier{Codec: boot.Codec, Store: store, EventsTopic: kcfg.EventsTopic, DeadLetters: dlq, Log: log}
	var gens *follower.Generations
	build := func(n int, a follower.Applier, handle func(context.Context, string, int32, []*sarama.ConsumerMessage) error) (follower.Follower, error) {
		if mode == "full" {
			return &follower.ReplicaFollower{Replica: &follower.Replica{Applier: a, Client: client}, Self: self}, nil
		}
		gcfg := kcfg.ForGeneration(n)
		topics := []string{gcfg.SnapshotsTopic, gcfg.EmailIndexTopic, kcfg.EventsTopic}
		var g *kafkax.Group
		standby := &follower.Standby{Applier: a, Client: client, Topics: topics, Self: self.ID, Count: max(*cfg.Standbys, 0),
			Assignment: func() kafkax.Assignment { return g.Assignment() }, Ready: func() error { return g.Ready() }, Log: log.With("snapshot_generation", n)}
		opts := kafkax.GroupOptions{
			Group: topology.GenerationGroup(*cfg.Group, n), Topics: topics, Self: self,
			SessionTimeout: *cfg.SessionTimeout, Start: a.Start, Handle: handle,
			// A partition whose owner left goes to a member that kept it warm.
			Prefer: standby.Preferred,
			// And every rebalance places partitions where the views hold
			// the most of them: owned, or kept warm.
			Held: func() (map[int32]int64, error) { return store.Offsets(gcfg.SnapshotsTopic) },
			Assigned: func(s kafkax.Session) {
				standby.Release(s.Partitions) // before the session reads the view's offsets
				gens.Assigned(s.Partitions)
			},
			// A full disk steps the instance out of the group: the others
			// can apply what its view cannot.
			Unfit: store.Writable,
		}
		if static {
			opts.InstanceID = self.ID
		}
		g, err = kafkax.NewGroup(client, opts, log.With("snapshot_generation", n))
		if err != nil {
			return nil, err
		}
		return &follower.GroupFollower{Group: g, Config: kcfg.GroupConfig(Name, opts), Brokers: kcfg.Brokers, Standby: standby}, nil
	}
	gens = follower.NewGenerations(client, kcfg, applier, build, log)
	gens.SetGrace(*cfg.SwitchGrace)
	var health httpx.Health
	health.Check("view", gens.Ready)

	mux := service.NewRouter(log, &health, common.AccessLogOption())
	sec.Install(mux)
	ports.HTTP{
		Log:         log,
		Routing:     routing.Routing{Router: gens, Self: self, Wait: *cfg.RouteWait, Log: log, Sign: sec.Sign, Waits: ports.Waits},
		PartitionOf: store.Partition,
		EmailKey:    boot.Codec,
		Queries: ports.Queries{
			GetProfile:     app.GetProfileHandler{View: store, NotFound: view.ErrNotFound, MaxWait: *cfg.MaxWait},
			SearchProfiles: app.SearchProfilesHandler{View: store, NotFound: view.ErrNotFound, MaxWait: *cfg.MaxWait},
			WaitVisible:    app.WaitVisibleHandler{View: store, NotFound: view.ErrNotFound, MaxWait: *cfg.MaxWait},
			GetHistory:     app.GetHistoryHandler{View: store, MaxWait: *cfg.MaxWait},
		},
	}.Register(mux)
	ports.Admin{Views: gens, Instance: self.ID}.Register(mux)
	// GET /api/changes: any instance streams the serving generation's
	// snapshot topic, each stream with a Kafka client of its own (see
	// changes.Kafka). Streams end at shutdown (ctx), so that the graceful
	// shutdown does not wait for them.
	(&ports.Changes{
		Source: changes.Kafka{Codec: boot.Codec, NewClient: func() (sarama.Client, error) {
			sc := kcfg.Sarama("query-svc-changes")
			sc.Metadata.Full = false
			return sarama.NewClient(kcfg.Brokers, sc)
		}},
		Generation: gens.Generation,
		Topic:      func(n int) string { return kcfg.ForGeneration(n).SnapshotsTopic },
		Max:        *cfg.StreamMax,
		Stop:       ctx.Done(),
		Instance:   self.ID,
		Log:        log,
	}).Register(mux)
	mux.HandleFunc(routing.TablePath, routing.TableHandler(self, mode, kcfg.Partitions, gens)).Methods(http.MethodGet, http.MethodHead)
	mux.HandleFunc("/debug/assignment", routing.DebugHandler(self, mode, gens, func() map[string]any {
		held, _ := store.Held()
		n := gens.Generation()
		owned := map[int32]bool{}
		for _, p := range gens.Owned() {
			owned[p] = true
		}
		// The profiles of the partitions it serves (all of them in the
		// full-replica mode), and apart those it keeps warm for others.
		warm := gens.Standby()
		counts, standby := map[int32]int{}, map[int32]int{}
		for _, p := range held[kcfg.ForGeneration(n).SnapshotsTopic] {
			switch {
			case mode == "full" || owned[p]:
				counts[p], _ = store.Count(p)
			case slices.Contains(warm, p):
				standby[p], _ = store.Count(p)
			}
		}
		return map[string]any{"held": held, "profilesByPartition": counts, "standby": warm, "standbyProfilesByPartition": standby, "generation": n}
	})).Methods(http.MethodGet)

	// A read-your-writes wait from command-svc asks for 102 at once
	// (httpx.HeaderAlive), to tell this instance waiting from unreachable.
	a := common.Application(log, httpx.AnswerAlive(common.CORS(mux)), gens.Run, sec.Task, boot.RunKeys)
	a.Starting = []any{"kafka_security", kcfg.Security, "http_addr", *common.HTTPAddr, "self", self, "mode", mode, "data_dir", *cfg.DataDir, "brokers", kcfg.Brokers, "control", kcfg.ControlTopic,
		"auth_mode", sec.Auth.Mode, "signed_internal_requests", sec.Auth.Signer != nil}
	return a, nil
}
