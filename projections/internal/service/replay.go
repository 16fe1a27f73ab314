package service

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"time"

	"github.com/IBM/sarama"

	"profiles/platform/config"
	"profiles/platform/service"
	"profiles/platform/topology"
	"profiles/projections/replay"
)

// ReplayName is the replay tool's name: in its logs and Kafka client ids.
const ReplayName = "replay"

// ReplayUsage is the replay tool's usage, for no command or "help".
const ReplayUsage = `usage: replay COMMAND [flags]

Commands:
  status [-json]          show the current snapshot generation and the built ones
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
  topics [-generation N] [-json]
                          print the topics the services need, with their
                          partitions and configs, as kafka-topics.sh commands
                          (or JSON), for a platform team that creates them
                          (TOPICS_CREATE=false); no broker and no key needed

Kafka settings come from the same flags and environment variables as the
services (KAFKA_BROKERS, EVENTS_TOPIC, SNAPSHOTS_TOPIC, ...), and so does
the key-encryption key of personal data (PII_KEK or PII_KEK_FILE; make
replay passes the one make run generated); run "replay COMMAND -h" for
them.
`

// ReplayCommands are the replay tool's commands, in the order of
// ReplayUsage.
var ReplayCommands = []string{"status", "snapshots", "verify", "switch", "drop", "views", "topics"}

// ReplayOffline are the commands that run without a broker or a key
// (RunOffline).
var ReplayOffline = []string{"topics"}

// VerifyFailed is the error of a verification that found differences
// (replay verify, or snapshots -switch): the tool exits with status 3 on it.
type VerifyFailed struct{ Report replay.VerifyReport }

func (v VerifyFailed) Error() string {
	return fmt.Sprintf("generation %d differs from the live generation %d in %d snapshot and %d email index keys",
		v.Report.Candidate, v.Report.Live, v.Report.DiffCount, v.Report.IndexDiffs)
}

// ReplayConfig is the configuration of one replay command.
type ReplayConfig struct {
	Kafka *service.KafkaFlags

	ProjectorGroup *string
	QueryGroup     *string
	Generation     *int
	Switch         *bool
	Force          *bool
	Wait           *time.Duration
	Query          *string
	Progress       *time.Duration
	JSON           *bool
	LogLevel       *string
}

// RegisterReplayFlags registers the settings of a replay command on fs.
func RegisterReplayFlags(fs *flag.FlagSet) *ReplayConfig {
	return &ReplayConfig{
		Kafka:          service.RegisterKafkaFlags(fs),
		ProjectorGroup: config.String(fs, "projector-group", "PROJECTOR_GROUP", "profiles-projector", "base consumer group of the projector"),
		QueryGroup:     config.String(fs, "query-group", "QUERY_GROUP", "profiles-query", "base consumer group of query-svc (drop deletes its group of the generation)"),
		Generation:     fs.Int("generation", 0, "snapshot generation (snapshots: 0 = the next one; topics: whose snapshot and index topics, 0 = the first)"),
		Switch:         fs.Bool("switch", false, "snapshots: verify the new generation and switch to it if it matches"),
		Force:          fs.Bool("force", false, "switch: switch even without a clean verification"),
		Wait:           fs.Duration("wait", 5*time.Minute, "longest wait for the live projector (verify) or a view rebuild (views)"),
		Query:          config.String(fs, "query", "QUERY_URLS", "", "views: comma-separated base URLs of the query-svc instances"),
		Progress:       fs.Duration("progress", 2*time.Second, "interval of the progress lines"),
		JSON:           fs.Bool("json", false, "status, topics: print JSON (see ReplayStatus, TopicPlan) instead of text"),
		LogLevel:       config.String(fs, "log-level", "LOG_LEVEL", "info", "log level: debug, info, warn or error"),
	}
}

// Logger installs and returns the tool's logger: JSON on standard error,
// at LOG_LEVEL.
func (cfg *ReplayConfig) Logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("service", ReplayName)
	slog.SetDefault(log)
	return log, nil
}

// Run runs the replay command cmd on boot (made by service.NewBoot, not
// yet connected), writing its report to out. It connects to Kafka and
// follows the keys topic in the background while the command runs. A
// verification that finds differences is a VerifyFailed.
func (cfg *ReplayConfig) Run(ctx context.Context, boot *service.Boot, cmd string, out io.Writer) error {
	if err := boot.Connect(ctx); err != nil {
		return err
	}
	boot.Background(ctx, boot.RunKeys)
	kcfg, client, gen := boot.Kafka, boot.Client, *cfg.Generation
	env := replay.Env{Kafka: kcfg, Client: client, ProjectorGroup: *cfg.ProjectorGroup, Out: out, Every: *cfg.Progress, Log: boot.Log,
		// From the environment only: a flag would show the token in the
		// process list.
		Token: os.Getenv("AUTH_TOKEN"),
		Codec: boot.Codec}

	needGen := func() error {
		if gen < 1 {
			return fmt.Errorf("%s needs -generation N", cmd)
		}
		return nil
	}
	verify := func(n int) error {
		rep, err := replay.Verify(ctx, env, n, *cfg.Wait)
		if err != nil {
			return err
		}
		if !rep.OK() {
			return VerifyFailed{rep}
		}
		return nil
	}
	switch cmd {
	case "status":
		st, err := LoadReplayStatus(ctx, client, kcfg)
		if err != nil {
			return err
		}
		if *cfg.JSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		st.WriteText(out)
		return nil
	case "snapshots":
		res, err := replay.RebuildSnapshots(ctx, env, gen)
		if err != nil || !*cfg.Switch {
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
		return verify(gen)
	case "switch":
		if err := needGen(); err != nil {
			return err
		}
		return replay.Switch(ctx, env, gen, *cfg.Force)
	case "drop":
		if err := needGen(); err != nil {
			return err
		}
		return replay.Drop(ctx, env, gen, *cfg.QueryGroup)
	case "views":
		urls := config.List(*cfg.Query)
		if len(urls) == 0 {
			return fmt.Errorf("views needs -query URL[,URL...] (or QUERY_URLS)")
		}
		_, err := replay.RebuildViews(ctx, env, urls, *cfg.Wait)
		return err
	default:
		return fmt.Errorf("unknown command %q\n\n%s", cmd, ReplayUsage)
	}
}

// ReplayStatus is what replay status reports (as JSON with -json): the
// current snapshot generation and every generation built.
type ReplayStatus struct {
	// Current is the generation readers use (1: the original topics).
	Current           int    `json:"current"`
	CurrentSnapshots  string `json:"currentSnapshots"`
	CurrentEmailIndex string `json:"currentEmailIndex"`
	// Generations are the generations built by replay snapshots, by
	// number.
	Generations []GenerationStatus `json:"generations"`
}

// GenerationStatus is one built generation in a ReplayStatus.
type GenerationStatus struct {
	Generation int        `json:"generation"`
	Current    bool       `json:"current"`
	Snapshots  string     `json:"snapshots"`
	EmailIndex string     `json:"emailIndex"`
	BuiltAt    time.Time  `json:"builtAt"`
	Events     int64      `json:"events"`
	Profiles   int64      `json:"profiles"`
	VerifiedAt *time.Time `json:"verifiedAt,omitempty"`
}

// LoadReplayStatus reads the control topic and returns what replay status
// reports.
func LoadReplayStatus(ctx context.Context, client sarama.Client, kcfg topology.Config) (ReplayStatus, error) {
	ctl, err := topology.LoadControl(ctx, client, kcfg.ControlTopic)
	if err != nil {
		return ReplayStatus{}, err
	}
	cur := ctl.CurrentGeneration()
	st := ReplayStatus{Current: cur, CurrentSnapshots: kcfg.ForGeneration(cur).SnapshotsTopic,
		CurrentEmailIndex: kcfg.ForGeneration(cur).EmailIndexTopic, Generations: []GenerationStatus{}}
	ns := make([]int, 0, len(ctl.Builds))
	for n := range ctl.Builds {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	for _, n := range ns {
		b := ctl.Builds[n]
		st.Generations = append(st.Generations, GenerationStatus{Generation: n, Current: n == cur, Snapshots: b.Snapshots,
			EmailIndex: b.EmailIndex, BuiltAt: b.BuiltAt, Events: b.Events, Profiles: b.Profiles, VerifiedAt: b.VerifiedAt})
	}
	return st, nil
}

// WriteText writes the status as replay status prints it without -json.
func (st ReplayStatus) WriteText(out io.Writer) {
	fmt.Fprintf(out, "current generation: %d (%s, %s)\n", st.Current, st.CurrentSnapshots, st.CurrentEmailIndex)
	if len(st.Generations) == 0 {
		fmt.Fprintln(out, "no generation built by replay yet (make replay ARGS=\"snapshots -switch\" builds one from the event log)")
	}
	for _, g := range st.Generations {
		verified := "not verified"
		if g.VerifiedAt != nil {
			verified = "verified " + g.VerifiedAt.Format(time.RFC3339)
		}
		current := ""
		if g.Current {
			current = " (current)"
		}
		fmt.Fprintf(out, "generation %d%s: %s, %s, built %s from %d events, %d profiles, %s\n",
			g.Generation, current, g.Snapshots, g.EmailIndex, g.BuiltAt.Format(time.RFC3339), g.Events, g.Profiles, verified)
	}
}

// RunOffline runs a command of ReplayOffline, writing to out. It reads
// the settings but dials no broker and loads no key.
func (cfg *ReplayConfig) RunOffline(cmd string, out io.Writer) error {
	switch cmd {
	case "topics":
		c, err := cfg.Kafka.Kafka.Config()
		if err != nil {
			return err
		}
		specs := c.Specs()
		if n := *cfg.Generation; n > 1 {
			specs = append(c.BaseSpecs(), c.GenerationSpecs(n)...)
		}
		plan := topology.Plan(specs, c.ReplicationFactor)
		if *cfg.JSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(plan)
		}
		return topology.WriteCreateCommands(out, plan)
	default:
		return fmt.Errorf("unknown offline command %q", cmd)
	}
}
