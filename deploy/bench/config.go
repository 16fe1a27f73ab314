package bench

import (
	"fmt"
	"io"
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
// bench) or "full" (1,000,000 profiles, as the issue asks).
func Preset(size string) (Config, error) {
	c := Config{
		Size: size, Partitions: 12, ReadConcurrency: 16, WriteConcurrency: 64, OpenFraction: 0.5,
		MaxInFlight: 2048, WTVRecords: 1000, Profile: true, RestartCommand: true, LoadTimeout: 15 * time.Minute,
	}
	switch size {
	case "tiny":
		c.Profiles, c.Warmup, c.Duration, c.PerfRecords, c.WTVRecords = 2000, 50*time.Millisecond, 250*time.Millisecond, 20000, 20
		c.Partitions, c.ReadConcurrency, c.WriteConcurrency = 4, 8, 16
		c.Profile, c.LoadTimeout = false, 2*time.Minute
	case "default":
		c.Profiles, c.Warmup, c.Duration, c.PerfRecords = 200_000, time.Second, 5*time.Second, 200_000
	case "full":
		c.Profiles, c.Warmup, c.Duration, c.PerfRecords = 1_000_000, time.Second, 10*time.Second, 500_000
	default:
		return c, fmt.Errorf("unknown size %q (tiny, default or full)", size)
	}
	return c, nil
}
