// Package service is command-svc's composition root: its configuration
// and NewApplication, which wires the state store, the event log, the
// consumer group, the use cases and the HTTP ports into what main runs.
package service

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/google/uuid"

	"profiles/command-svc/internal/adapters"
	"profiles/command-svc/internal/app"
	"profiles/command-svc/internal/ports"
	"profiles/command-svc/internal/state"
	"profiles/platform/clock"
	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/peer"
	"profiles/platform/routing"
	"profiles/platform/service"
)

// Name is the service's name: in its logs, Kafka client ids and instance
// ids.
const Name = "command-svc"

// Config is command-svc's configuration: the settings every service has,
// and its own.
type Config struct {
	Common *service.Flags
	API    *service.APIFlags
	Kafka  *service.KafkaFlags

	DataDir             *string
	StateCacheMB        *int
	QueryURLs           *string
	QueryWaitAll        *bool
	AppendTimeout       *time.Duration
	CommitInterval      *time.Duration
	TxnTimeout          *time.Duration
	Visibility          *time.Duration
	MaxBody             *int
	MaxInflightWrites   *int
	Group               *string
	SessionTimeout      *time.Duration
	RouteWait           *time.Duration
	ClaimLease          *time.Duration
	FaultExitAfterClaim *bool
}

// DefaultMaxInflightWrites is MAX_INFLIGHT_WRITES's default. A write
// appends at most 3 records at a time (a create: its event, its data key
// and its email's claim; a change of both fields: two events and the
// claim), so 1024 writes fill at most two of the group commit's
// transactions of up to 2,000 records: the event log takes all the
// writes in flight in two transactions once they are queued. It is over
// ten times what an instance has in flight at its measured maximum
// (about 600 writes/s at 30-70 ms each, BENCH.md), so only a burst meets
// it, and two cores work off a full bound in about two seconds, well
// within APPEND_TIMEOUT: an admitted write does not time out in the
// queue.
const DefaultMaxInflightWrites = 1024

// RegisterFlags registers command-svc's settings on fs.
func RegisterFlags(fs *flag.FlagSet) *Config {
	return &Config{
		Common:              service.RegisterFlags(fs, ":8081"),
		API:                 service.RegisterAPIFlags(fs),
		Kafka:               service.RegisterKafkaFlags(fs),
		DataDir:             config.String(fs, "data-dir", "DATA_DIR", ".data/command", "directory of the Pebble stores: state/, the state of the owned partitions, and keys/, the keyring's (caches of Kafka: safe to delete, the partitions are then refolded from the event log)"),
		StateCacheMB:        config.Int(fs, "state-cache-mb", "STATE_CACHE_MB", state.DefaultCacheSize>>20, "Pebble block cache of the state store, in MiB"),
		QueryURLs:           config.String(fs, "query-url", "QUERY_URL", "http://127.0.0.1:8082", "comma-separated base URLs of query-svc instances, asked for read-your-writes"),
		QueryWaitAll:        config.Bool(fs, "query-wait-all", "QUERY_WAIT_ALL", false, "wait until every query-svc instance in QUERY_URL shows a write (set it when query-svc runs with REPLICA_MODE=full)"),
		AppendTimeout:       config.Duration(fs, "append-timeout", "APPEND_TIMEOUT", adapters.DefaultAppendTimeout, "longest an append waits for the event log (too few in-sync replicas, say) before the command fails with 503 and Retry-After; an append not yet committing by then is aborted, and a transaction that has run this long replaces the instance's transactional producer"),
		CommitInterval:      config.Duration(fs, "commit-interval", "COMMIT_INTERVAL", adapters.DefaultCommitInterval, "how long a transaction on the event log waits, after its first append, for more appends to share it (group commit across every owned partition); a negative value does not wait"),
		TxnTimeout:          config.Duration(fs, "txn-timeout", "TXN_TIMEOUT", 0, "transaction timeout of the event log's producer: how long a transaction left open by a frozen instance can hold back its partitions' new owner before Kafka aborts it (0: SESSION_TIMEOUT)"),
		Visibility:          config.Duration(fs, "visibility-timeout", "VISIBILITY_TIMEOUT", 10*time.Second, "longest a write waits for readers to see it before answering 202"),
		MaxBody:             config.Int(fs, "max-body", "MAX_BODY_BYTES", httpx.DefaultMaxBody, "largest accepted request body, in bytes"),
		MaxInflightWrites:   config.Int(fs, "max-inflight-writes", "MAX_INFLIGHT_WRITES", DefaultMaxInflightWrites, "most writes in flight on this instance (admitted and not yet appended); beyond it a write is answered 503 overloaded with Retry-After at once (0: no limit)"),
		Group:               config.String(fs, "group", "COMMAND_GROUP", "profiles-command", "consumer group of the command-svc instances"),
		SessionTimeout:      config.Duration(fs, "session-timeout", "SESSION_TIMEOUT", 10*time.Second, "how long a silent instance keeps its partitions"),
		RouteWait:           config.Duration(fs, "route-wait", "ROUTE_WAIT", 15*time.Second, "longest a request waits for an owner of its partition"),
		ClaimLease:          config.Duration(fs, "claim-lease", "CLAIM_LEASE", 30*time.Second, "how long an email claim whose profile does not hold the email is protected before another profile may take it over"),
		FaultExitAfterClaim: config.Bool(fs, "fault-exit-after-claim", "FAULT_EXIT_AFTER_CLAIM", false, "TEST ONLY: exit right after an email claim, before the event is appended"),
	}
}

// NewApplication wires command-svc on boot (made by service.NewBoot, not
// yet connected): it connects to Kafka and returns the service to run.
// What it acquires is released by boot.Close, also after an error. ctx
// ends the service's background work (the JWKS reloads).
func (cfg *Config) NewApplication(ctx context.Context, boot *service.Boot) (*service.Application, error) {
	log, common := boot.Log, cfg.Common
	self, static, err := common.Self(Name)
	if err != nil {
		return nil, err
	}
	if *cfg.MaxInflightWrites < 0 {
		return nil, fmt.Errorf("MAX_INFLIGHT_WRITES must be 0 (no limit) or more, not %d", *cfg.MaxInflightWrites)
	}
	sec, err := cfg.API.Security(ctx, log)
	if err != nil {
		return nil, err
	}
	if err := boot.Connect(ctx); err != nil {
		return nil, err
	}
	kcfg := boot.Kafka
	if boot.Keyring != nil {
		// The event log Puts every key it writes; the keys of partitions
		// it takes over are read on a miss.
		boot.Keyring.Lazy = true
	}
	data, err := boot.OpenDataDir(*cfg.DataDir)
	if err != nil {
		return nil, err
	}
	// The state records the cluster and the event log it is folded from:
	// a data directory that comes from elsewhere is emptied and refolded.
	states, err := state.Open(log, boot.Codec, kcfg.ClaimsTopic, state.Options{
		Dir: data.Store("state"), Origin: data.Cluster + " " + kcfg.EventsTopic, CacheSize: int64(*cfg.StateCacheMB) << 20})
	if err != nil {
		return nil, err
	}
	boot.DeferClose(states)
	eventLog := &adapters.TxnEventLog{Config: kcfg, ClientID: self.ID, TxnPrefix: *cfg.Group, Group: *cfg.Group, Source: "/command-svc/" + self.ID, Log: log,
		AppendTimeout: *cfg.AppendTimeout, CommitInterval: *cfg.CommitInterval, TxnTimeout: cmp.Or(*cfg.TxnTimeout, *cfg.SessionTimeout),
		Late: states, Profiles: states, ClaimSeqs: states, KEK: boot.KEK, Codec: boot.Codec, Keys: boot.Keyring}
	boot.Defer(eventLog.Close)
	opts := kafkax.GroupOptions{
		Group: *cfg.Group, Topics: []string{kcfg.EventsTopic, kcfg.ClaimsTopic}, Self: self, SessionTimeout: *cfg.SessionTimeout,
		Start: states.Start, Handle: states.Handle, Assigned: eventLog.Assigned,
		// A restart gets back the partitions whose state it holds.
		Held: func() (map[int32]int64, error) { return states.Offsets(kcfg.EventsTopic) },
	}
	if static {
		opts.InstanceID = self.ID
	}
	g, err := kafkax.NewGroup(boot.Client, opts, log)
	if err != nil {
		return nil, err
	}
	eventLog.Fenced = g.Rejoin
	eventLog.Serving = g.Serving
	partitionOf := func(key string) int32 { return kafkax.Partition(key, kcfg.Partitions) }
	peers := &adapters.Peers{Router: g, PartitionOf: partitionOf, EmailKey: boot.Codec, States: states, SelfURL: self.URL,
		Client: peer.Client{HTTP: &http.Client{Transport: httpx.PeerTransport}, Sign: sec.Sign}, Timeout: 30 * time.Second}
	claimEmail := app.ClaimEmailHandler{Claims: states, Writer: eventLog, Lookup: peers, Lease: *cfg.ClaimLease, Ages: app.NewClaimAges(100000), Now: clock.Now, EmailKey: boot.Codec}
	peers.Claims = claimEmail
	deps := app.Deps{
		States:     states,
		Events:     eventLog,
		Claims:     peers,
		ClaimLease: *cfg.ClaimLease,
		Admission:  adapters.NewMeteredAdmission(*cfg.MaxInflightWrites),
		Visibility: &adapters.QueryVisibility{BaseURLs: config.List(*cfg.QueryURLs), Client: &http.Client{Transport: httpx.PeerTransport}, Timeout: *cfg.Visibility, Every: *cfg.QueryWaitAll, Sign: sec.Sign,
			PartitionOf: partitionOf, EmailKey: boot.Codec},
		Serving: func(uid string) bool { return g.Serving(partitionOf(uid)) },
		NewID:   uuid.NewString,
		Now:     clock.Now,
	}
	if *cfg.FaultExitAfterClaim {
		log.Warn("FAULT_EXIT_AFTER_CLAIM is set: this instance exits after its first email claim")
		deps.AfterClaim = func() { os.Exit(3) }
	}
	var health httpx.Health
	health.Check("state", g.Ready)
	router := service.NewRouter(log, &health, common.AccessLogOption())
	sec.Install(router)
	ports.HTTP{
		Log: log, MaxBody: int64(*cfg.MaxBody),
		Routing:     routing.Routing{Router: g, Self: self, Wait: *cfg.RouteWait, Log: log, Sign: sec.Sign},
		PartitionOf: partitionOf,
		NewUID:      app.ColocatedUID(uuid.NewString, partitionOf, boot.Codec),
		EmailKey:    boot.Codec,
		Commands: ports.Commands{
			ClaimEmail:    claimEmail,
			State:         states,
			CreateProfile: app.CreateProfileHandler{Deps: deps},
			ChangeProfile: app.ChangeProfileHandler{Deps: deps},
			DeleteProfile: app.DeleteProfileHandler{Deps: deps},
		},
	}.Register(router)
	router.HandleFunc("/debug/assignment", routing.DebugHandler(self, "partitioned", g, nil)).Methods(http.MethodGet)
	router.HandleFunc(routing.TablePath, routing.TableHandler(self, "partitioned", kcfg.Partitions, g)).Methods(http.MethodGet, http.MethodHead)

	gcfg := kcfg.GroupConfig(Name, opts)
	consume := func(ctx context.Context) error { return g.Run(ctx, gcfg, kcfg.Brokers) }
	a := common.Application(log, common.CORS(router), consume, sec.Task, boot.RunKeys)
	a.Starting = []any{"kafka_security", kcfg.Security, "http_addr", *common.HTTPAddr, "self", self, "data_dir", *cfg.DataDir, "max_inflight_writes", *cfg.MaxInflightWrites, "events", kcfg.EventsTopic, "query_urls", *cfg.QueryURLs, "brokers", kcfg.Brokers,
		"auth_mode", sec.Auth.Mode, "signed_internal_requests", sec.Auth.Signer != nil}
	return a, nil
}
