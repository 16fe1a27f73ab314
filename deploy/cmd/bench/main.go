// Command bench is `make bench`: it measures the throughput and latency of
// the profiles services next to their ceilings (an empty handler on the
// same router, and Kafka's own ProducerPerformance and ConsumerPerformance),
// all in the same run, and writes the report (see BENCH.md). It expects a
// running broker (deploy/bench.sh starts one); it starts the services
// itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"profiles/deploy/bench"
)

func main() {
	bench.MaybeServeCeiling()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	size := fs.String("size", "default", "preset: tiny (2,000 profiles, sub-second runs), default (200,000 profiles, 5s runs) or full (1,000,000 profiles, 10s runs)")
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
	partitions := fs.Int("partitions", 0, "partitions of every topic (0: the preset's)")
	noProfile := fs.Bool("no-pprof", false, "take no CPU profiles")
	prefix := fs.String("prefix", "", "prefix of the run's topics and groups (default: bench-<time>)")
	_ = fs.Parse(os.Args[1:])

	cfg, err := bench.Preset(*size)
	if err != nil {
		return err
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
	if *partitions > 0 {
		cfg.Partitions = *partitions
	}
	if *noProfile {
		cfg.Profile = false
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
		return err
	}
	cfg.Self = []string{self}
	cfg.Log = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Println()
	fmt.Println(rep.Markdown())
	fmt.Printf("Written: %s/{latest.json,latest.md,latency.png,profiles/}", cfg.OutDir)
	if cfg.BenchMD != "" {
		fmt.Printf(" and the results section of %s", cfg.BenchMD)
	}
	fmt.Println()
	return nil
}
