package bench

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Config is one bench run.
type Config struct {
	// Repo is the repository root (deploy/kafka.sh, the modules).
	Repo string
	// Brokers is the Kafka bootstrap address; KafkaData the broker's data
	// directory (for its pid, to count its CPU; optional).
	Brokers, KafkaData string
	// DataDir holds the binaries, the Pebble views and the logs.
	DataDir string
	// OutDir receives latest.json, latest.md, latency.png and profiles/.
	OutDir string
	// BenchMD, when set, is the BENCH.md whose results section is rewritten.
	BenchMD string
	// Prefix names the run's topics and consumer groups.
	Prefix string
	// PortBase is the first service port (query-svc-0 on PortBase,
	// query-svc-1 +1, command-svc-0 +2, command-svc-1 +3, projector-0 +4,
	// the HTTP ceiling +5; pprof on the same +20). 0 picks free ports.
	PortBase int
	// Partitions of every topic.
	Partitions int
	// Size names the preset ("tiny", "default", "full").
	Size string
	// Profiles seeded (one ProfileCreated event each, so also the events
	// replayed).
	Profiles int
	// Warmup (not recorded) and Duration of every measured run.
	Warmup, Duration time.Duration
	// WriteWarmup is how long writes run, unmeasured, before the first
	// write scenario (0: none): the broker starts with the run, and its
	// JIT compiler compiles the transaction paths (the coordinator, the
	// markers, read_committed fetches) during the first writes, which a
	// broker that has run for a while did long ago.
	WriteWarmup time.Duration
	// ReadConcurrency and WriteConcurrency are the closed-loop workers.
	ReadConcurrency, WriteConcurrency int
	// OpenFraction: open-loop runs go at this fraction of the closed-loop
	// maximum of the same scenario.
	OpenFraction float64
	// MaxInFlight bounds the outstanding requests of an open-loop run.
	MaxInFlight int
	// PerfRecords is the size of the ProducerPerformance run at maximum;
	// WTVRecords the least of the run at the write-to-visible rate.
	PerfRecords, WTVRecords int
	// Profile captures CPU profiles (pprof) during the runs.
	Profile bool
	// Scenarios, when not empty, names the only scenarios to run (a quick
	// before-and-after of one change); the report then leaves the others
	// out.
	Scenarios []string
	// GoMemLimit, when set, is the GOMEMLIMIT of every service (e.g.
	// "128MiB"): the Go runtime's soft limit of its own memory, which
	// makes it collect and return memory to the OS before the heap doubles.
	// Pebble's caches, allocated outside the Go heap, do not count.
	GoMemLimit string
	// RestartCommand also restarts a command-svc instance (it rebuilds
	// its state from the event log).
	RestartCommand bool
	// LoadTimeout bounds the start of the services and their catch-up.
	LoadTimeout time.Duration
	// Self runs the HTTP ceiling: this program's argv, started with
	// CeilingRoleEnv=ceiling (see MaybeServeCeiling).
	Self []string
	// Log receives the progress lines.
	Log io.Writer
}

// Preset returns the configuration of a named size: "tiny" (the harness
// check of make test: 2,000 profiles, sub-second runs), "default" (make
// bench), "full" (1,000,000 profiles, as the issue asks) or "large"
// (2,000,000 profiles and two scenarios: how memory, restarts and cold
// starts grow with the profiles, in about half an hour on a 2-core
// machine; the cold start, all services at once, is most of it).
func Preset(size string) (Config, error) {
	c := Config{
		Size: size, Partitions: 12, ReadConcurrency: 16, WriteConcurrency: 64, OpenFraction: 0.5,
		MaxInFlight: 2048, WTVRecords: 1000, Profile: true, RestartCommand: true, LoadTimeout: 15 * time.Minute,
	}
	switch size {
	case "tiny":
		c.Profiles, c.Warmup, c.Duration, c.PerfRecords, c.WTVRecords = 2000, 50*time.Millisecond, 250*time.Millisecond, 20000, 20
		c.WriteWarmup = 250 * time.Millisecond
		c.Partitions, c.ReadConcurrency, c.WriteConcurrency = 4, 8, 16
		c.Profile, c.LoadTimeout = false, 2*time.Minute
	case "default":
		c.Profiles, c.Warmup, c.Duration, c.PerfRecords, c.WriteWarmup = 200_000, time.Second, 5*time.Second, 200_000, 30*time.Second
	case "full":
		c.Profiles, c.Warmup, c.Duration, c.PerfRecords, c.WriteWarmup = 1_000_000, time.Second, 10*time.Second, 500_000, 30*time.Second
	case "large":
		c.Profiles, c.Warmup, c.Duration, c.PerfRecords, c.WriteWarmup = 2_000_000, time.Second, 10*time.Second, 500_000, 30*time.Second
		// A read and a write, so that the memory after the scenarios has
		// served both; the throughput of the rest does not depend on size.
		c.Scenarios, c.LoadTimeout = []string{"get-owner", "post-async"}, 45*time.Minute
	default:
		return c, fmt.Errorf("unknown size %q (tiny, default, full or large)", size)
	}
	return c, nil
}

// ParseFlags returns the Config of the command line args (deploy/bench.sh
// passes its arguments through): a preset (-size), with what the other
// flags override, paths made absolute against -repo, and this program as
// the HTTP ceiling. A bad flag exits with usage, as flag.ExitOnError does.
func ParseFlags(args []string, log io.Writer) (Config, error) {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	size := fs.String("size", "default", "preset: tiny (2,000 profiles, sub-second runs), default (200,000 profiles, 5s runs), full (1,000,000 profiles, 10s runs) or large (2,000,000 profiles, two scenarios)")
	repo := fs.String("repo", ".", "repository root")
	brokers := fs.String("brokers", "127.0.0.1:29392", "Kafka bootstrap servers")
	kafkaData := fs.String("kafka-data", "", "the broker's data directory (for its pid, to count its CPU)")
	data := fs.String("data", ".data/bench/run", "directory of the binaries, the Pebble views and the logs")
	out := fs.String("out", "deploy/bench/results", "directory of latest.json, latest.md, latency.png and profiles/")
	benchMD := fs.String("bench-md", "BENCH.md", "file whose results section is rewritten (empty: none)")
	portBase := fs.Int("port-base", 29400, "first service port (0: free ports)")
	profiles := fs.Int("profiles", 0, "profiles to seed (0: the preset's)")
	duration := fs.Duration("duration", 0, "length of each measured run (0: the preset's)")
	warmup := fs.Duration("warmup", -1, "warm-up before each measured run (-1: the preset's)")
	writeWarmup := fs.Duration("write-warmup", -1, "writes, unmeasured, before the first write scenario, so that the broker has compiled its transaction paths (0: none; -1: the preset's)")
	partitions := fs.Int("partitions", 0, "partitions of every topic (0: the preset's)")
	noProfile := fs.Bool("no-pprof", false, "take no CPU profiles")
	scenarios := fs.String("scenarios", "", "comma-separated scenarios to run, e.g. post,put (empty: all)")
	goMemLimit := fs.String("gomemlimit", "", "GOMEMLIMIT of every service, e.g. 128MiB (empty: the Go default, none)")
	prefix := fs.String("prefix", "", "prefix of the run's topics and groups (default: bench-<time>)")
	_ = fs.Parse(args)

	cfg, err := Preset(*size)
	if err != nil {
		return cfg, err
	}
	if *profiles > 0 {
		cfg.Profiles = *profiles
	}
	if *duration > 0 {
		cfg.Duration = *duration
	}
	if *warmup >= 0 {
		cfg.Warmup = *warmup
	}
	if *writeWarmup >= 0 {
		cfg.WriteWarmup = *writeWarmup
	}
	if *partitions > 0 {
		cfg.Partitions = *partitions
	}
	cfg.GoMemLimit = *goMemLimit
	if *noProfile {
		cfg.Profile = false
	}
	if *scenarios != "" {
		cfg.Scenarios = nil
	}
	for _, name := range strings.Split(*scenarios, ",") {
		if name = strings.TrimSpace(name); name != "" {
			cfg.Scenarios = append(cfg.Scenarios, name)
		}
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		a, err := filepath.Abs(filepath.Join(*repo, p))
		if err != nil {
			return p
		}
		return a
	}
	cfg.Repo = abs(".")
	cfg.Brokers, cfg.KafkaData = *brokers, abs(*kafkaData)
	cfg.DataDir, cfg.OutDir, cfg.BenchMD = abs(*data), abs(*out), abs(*benchMD)
	cfg.PortBase = *portBase
	cfg.Prefix = *prefix
	if cfg.Prefix == "" {
		cfg.Prefix = "bench-" + time.Now().UTC().Format("20060102-150405")
	}
	self, err := os.Executable()
	if err != nil {
		return cfg, err
	}
	cfg.Self = []string{self}
	cfg.Log = log
	return cfg, nil
}
