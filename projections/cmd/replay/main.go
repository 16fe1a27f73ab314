// Command replay rebuilds derived data from the event log. Run it with no
// arguments for its usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"profiles/platform/config"
	"profiles/platform/kafkax"
	"profiles/platform/pii"
	"profiles/projections/replay"
)

const usage = `usage: replay COMMAND [flags]

Commands:
  status                  show the current snapshot generation and the built ones
  snapshots [-generation N] [-switch]
                          fold profile-events into a new snapshot generation
                          (profile-snapshots.vN, profile-email-index.vN) next to
                          the live one; with -switch, verify it and switch to it
  verify -generation N    compare generation N with the live one, key by key
  switch -generation N [-force]
                          make N current; every projector and query-svc follows
  drop -generation N      delete a generation that is not current
  views -query URL[,URL]  make each query-svc instance drop its Pebble view and
                          re-read it from Kafka, one instance at a time; with
                          AUTH_MODE=jwt on query-svc, AUTH_TOKEN must hold a
                          bearer token with the scope profiles:admin

Kafka settings come from the same flags and environment variables as the
services (KAFKA_BROKERS, EVENTS_TOPIC, SNAPSHOTS_TOPIC, ...); run
"replay COMMAND -h" for them.
`

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "help" {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	err := run(os.Args[1], os.Args[2:], os.Stdout)
	var bad verifyFailed
	switch {
	case errors.As(err, &bad):
		fmt.Fprintln(os.Stderr, "replay:", err)
		os.Exit(3)
	case err != nil:
		fmt.Fprintln(os.Stderr, "replay:", err)
		os.Exit(1)
	}
}

type verifyFailed struct{ rep replay.VerifyReport }

func (v verifyFailed) Error() string {
	return fmt.Sprintf("generation %d differs from the live generation %d in %d snapshot and %d email index keys",
		v.rep.Candidate, v.rep.Live, v.rep.DiffCount, v.rep.IndexDiffs)
}

func run(cmd string, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("replay "+cmd, flag.ExitOnError)
	kflags := kafkax.RegisterFlags(fs)
	piiFlags := pii.RegisterFlags(fs)
	projGroup := config.String(fs, "projector-group", "PROJECTOR_GROUP", "profiles-projector", "base consumer group of the projector")
	queryGroup := config.String(fs, "query-group", "QUERY_GROUP", "profiles-query", "base consumer group of query-svc (drop deletes its group of the generation)")
	gen := fs.Int("generation", 0, "snapshot generation (snapshots: 0 = the next one)")
	doSwitch := fs.Bool("switch", false, "snapshots: verify the new generation and switch to it if it matches")
	force := fs.Bool("force", false, "switch: switch even without a clean verification")
	wait := fs.Duration("wait", 5*time.Minute, "longest wait for the live projector (verify) or a view rebuild (views)")
	query := config.String(fs, "query", "QUERY_URLS", "", "views: comma-separated base URLs of the query-svc instances")
	every := fs.Duration("progress", 2*time.Second, "interval of the progress lines")
	level := config.String(fs, "log-level", "LOG_LEVEL", "info", "log level: debug, info, warn or error")
	_ = fs.Parse(args)

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("LOG_LEVEL: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("service", "replay")
	slog.SetDefault(log)
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
	client, err := kafkax.Connect(ctx, kcfg, "replay")
	if err != nil {
		return err
	}
	defer client.Close()
	keyring, err := pii.NewKeyring(kcfg, "replay", kek, log)
	if err != nil {
		return err
	}
	defer keyring.Close()
	codec := pii.NewCodec(kek, keyring)
	keysCtx, stopKeys := context.WithCancel(ctx)
	defer stopKeys()
	go func() { _ = keyring.Run(keysCtx) }()
	env := replay.Env{Kafka: kcfg, Client: client, ProjectorGroup: *projGroup, Out: out, Every: *every, Log: log,
		// From the environment only: a flag would show the token in the
		// process list.
		Token: os.Getenv("AUTH_TOKEN"),
		Codec: codec}

	needGen := func() error {
		if *gen < 1 {
			return fmt.Errorf("%s needs -generation N", cmd)
		}
		return nil
	}
	verify := func(n int) error {
		rep, err := replay.Verify(ctx, env, n, *wait)
		if err != nil {
			return err
		}
		if !rep.OK() {
			return verifyFailed{rep}
		}
		return nil
	}
	switch cmd {
	case "status":
		ctl, err := kafkax.LoadControl(ctx, client, kcfg.ControlTopic)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "current generation: %d (%s, %s)\n", ctl.CurrentGeneration(),
			kcfg.ForGeneration(ctl.CurrentGeneration()).SnapshotsTopic, kcfg.ForGeneration(ctl.CurrentGeneration()).EmailIndexTopic)
		ns := make([]int, 0, len(ctl.Builds))
		for n := range ctl.Builds {
			ns = append(ns, n)
		}
		sort.Ints(ns)
		for _, n := range ns {
			b := ctl.Builds[n]
			verified := "not verified"
			if b.VerifiedAt != nil {
				verified = "verified " + b.VerifiedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(out, "generation %d: %s, %s, built %s from %d events, %d profiles, %s\n",
				n, b.Snapshots, b.EmailIndex, b.BuiltAt.Format(time.RFC3339), b.Events, b.Profiles, verified)
		}
		return nil
	case "snapshots":
		res, err := replay.RebuildSnapshots(ctx, env, *gen)
		if err != nil || !*doSwitch {
			return err
		}
		if err := verify(res.Build.Generation); err != nil {
			return err
		}
		return replay.Switch(ctx, env, res.Build.Generation, false)
	case "verify":
		if err := needGen(); err != nil {
			return err
		}
		return verify(*gen)
	case "switch":
		if err := needGen(); err != nil {
			return err
		}
		return replay.Switch(ctx, env, *gen, *force)
	case "drop":
		if err := needGen(); err != nil {
			return err
		}
		return replay.Drop(ctx, env, *gen, *queryGroup)
	case "views":
		urls := config.List(*query)
		if len(urls) == 0 {
			return fmt.Errorf("views needs -query URL[,URL...] (or QUERY_URLS)")
		}
		_, err := replay.RebuildViews(ctx, env, urls, *wait)
		return err
	default:
		return fmt.Errorf("unknown command %q\n\n%s", cmd, usage)
	}
}
