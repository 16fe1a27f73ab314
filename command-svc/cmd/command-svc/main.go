// Command command-svc accepts POST, PUT and DELETE on /api/profile. Each
// instance owns some partitions of the event log in its consumer group;
// it runs the commands on profiles of those partitions, checking them
// against the folded state, and forwards the others to their owners.
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

	"github.com/google/uuid"

	"profiles/command-svc/internal/adapters"
	"profiles/command-svc/internal/app"
	"profiles/command-svc/internal/ports"
	"profiles/command-svc/internal/state"
	"profiles/events"
	"profiles/events/pii"
	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/peer"
	"profiles/platform/routing"
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
	api := service.RegisterAPIFlags(fs)
	kflags := kafkax.RegisterFlags(fs)
	piiFlags := pii.RegisterFlags(fs)
	queryURLs := config.String(fs, "query-url", "QUERY_URL", "http://127.0.0.1:8082", "comma-separated base URLs of query-svc instances, asked for read-your-writes")
	waitAll := config.Bool(fs, "query-wait-all", "QUERY_WAIT_ALL", false, "wait until every query-svc instance in QUERY_URL shows a write (set it when query-svc runs with REPLICA_MODE=full)")
	appendTimeout := config.Duration(fs, "append-timeout", "APPEND_TIMEOUT", adapters.DefaultAppendTimeout, "longest an append waits for the event log (too few in-sync replicas, say) before the command fails with 503 and Retry-After; an append not yet committing by then is aborted")
	visibility := config.Duration(fs, "visibility-timeout", "VISIBILITY_TIMEOUT", 10*time.Second, "longest a write waits for readers to see it before answering 202")
	maxBody := config.Int(fs, "max-body", "MAX_BODY_BYTES", httpx.DefaultMaxBody, "largest accepted request body, in bytes")
	group := config.String(fs, "group", "COMMAND_GROUP", "profiles-command", "consumer group of the command-svc instances")
	session := config.Duration(fs, "session-timeout", "SESSION_TIMEOUT", 10*time.Second, "how long a silent instance keeps its partitions")
	routeWait := config.Duration(fs, "route-wait", "ROUTE_WAIT", 15*time.Second, "longest a request waits for an owner of its partition")
	lease := config.Duration(fs, "claim-lease", "CLAIM_LEASE", 30*time.Second, "how long an email claim whose profile does not hold the email is protected before another profile may take it over")
	faultExitAfterClaim := config.Bool(fs, "fault-exit-after-claim", "FAULT_EXIT_AFTER_CLAIM", false, "TEST ONLY: exit right after an email claim, before the event is appended")
	_ = fs.Parse(os.Args[1:])

	log := common.Logger("command-svc")
	kcfg, err := kflags.Config()
	if err != nil {
		return err
	}
	kek, err := piiFlags.KEK(log)
	if err != nil {
		return err
	}
	emailKey := func(email string) string { return events.EmailKey(kek, email) }
	self, static, err := common.Self("command-svc")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sec, err := api.Security(ctx, log)
	if err != nil {
		return err
	}

	client, err := kafkax.Connect(ctx, kcfg, "command-svc")
	if err != nil {
		return err
	}
	defer client.Close()
	keyring, err := kafkax.NewKeyring(kcfg, "command-svc", kek, log)
	if err != nil {
		return err
	}
	defer keyring.Close()
	events.SetKeys(keyring)
	states := state.NewStore(log, kcfg.ClaimsTopic)
	eventLog := &adapters.TxnEventLog{Config: kcfg, ClientID: self.ID, TxnPrefix: *group, Source: "/command-svc/" + self.ID, Log: log, AppendTimeout: *appendTimeout, Late: states, Profiles: states, KEK: kek, Keys: keyring}
	defer eventLog.Close()
	opts := kafkax.GroupOptions{
		Group: *group, Topics: []string{kcfg.EventsTopic, kcfg.ClaimsTopic}, Self: self, SessionTimeout: *session,
		Start: states.Start, Handle: states.Handle, Assigned: eventLog.Assigned,
	}
	if static {
		opts.InstanceID = self.ID
	}
	g, err := kafkax.NewGroup(client, opts, log)
	if err != nil {
		return err
	}
	eventLog.Fenced = func(p int32) { g.Rejoin(fmt.Sprintf("the producer of partition %d was fenced", p)) }
	partitionOf := func(key string) int32 { return kafkax.Partition(key, kcfg.Partitions) }
	peers := &adapters.Peers{Router: g, PartitionOf: partitionOf, EmailKey: emailKey, States: states, SelfURL: self.URL,
		Client: peer.Client{HTTP: &http.Client{Transport: httpx.PeerTransport}, Sign: sec.Sign}, Timeout: 30 * time.Second}
	claimEmail := app.ClaimEmailHandler{Claims: states, Log: eventLog, Lookup: peers, Lease: *lease, Now: time.Now, EmailKey: emailKey}
	peers.Claims = claimEmail
	deps := app.Deps{
		States:     states,
		Log:        eventLog,
		Claims:     peers,
		ClaimLease: *lease,
		Visibility: &adapters.QueryVisibility{BaseURLs: config.List(*queryURLs), Client: &http.Client{Transport: httpx.PeerTransport}, Timeout: *visibility, Every: *waitAll, Sign: sec.Sign},
		NewID:      uuid.NewString,
		Now:        time.Now,
	}
	if *faultExitAfterClaim {
		log.Warn("FAULT_EXIT_AFTER_CLAIM is set: this instance exits after its first email claim")
		deps.AfterClaim = func() { os.Exit(3) }
	}
	var health httpx.Health
	health.Check("state", g.Ready)
	router := service.NewRouter(log, &health)
	sec.Install(router)
	ports.HTTP{
		Log: log, MaxBody: int64(*maxBody),
		Routing:     routing.Routing{Router: g, Self: self, Wait: *routeWait, Log: log, Sign: sec.Sign},
		PartitionOf: partitionOf,
		NewUID:      uuid.NewString,
		EmailKey:    emailKey,
		Commands: ports.Commands{
			ClaimEmail:    claimEmail,
			State:         states,
			CreateProfile: app.CreateProfileHandler{Deps: deps},
			ChangeProfile: app.ChangeProfileHandler{Deps: deps},
			DeleteProfile: app.DeleteProfileHandler{Deps: deps},
		},
	}.Register(router)
	router.HandleFunc("/debug/assignment", routing.DebugHandler(self, "partitioned", g, nil)).Methods(http.MethodGet)

	gcfg := kcfg.GroupConfig("command-svc", opts)
	consume := func(ctx context.Context) error { return g.Run(ctx, gcfg, kcfg.Brokers) }
	log.Info("starting", "kafka_security", kcfg.Security, "http_addr", *common.HTTPAddr, "self", self, "events", kcfg.EventsTopic, "query_urls", *queryURLs, "brokers", kcfg.Brokers,
		"auth_mode", sec.Auth.Mode, "signed_internal_requests", sec.Auth.Signer != nil)
	return service.Run(ctx, log, *common.HTTPAddr, common.CORS(router), *common.ShutdownGrace, consume, sec.Task, keyring.Run)
}
