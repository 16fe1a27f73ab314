// Command bench is `make bench`: it measures the throughput and latency of
// the profiles services next to their ceilings (an empty handler on the
// same router, and Kafka's own ProducerPerformance and ConsumerPerformance),
// all in the same run, and writes the report (see BENCH.md). It expects a
// running broker (deploy/bench.sh starts one); it starts the services
// itself.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

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
	cfg, err := bench.ParseFlags(os.Args[1:], os.Stdout)
	if err != nil {
		return err
	}
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
