// Command bench is `make bench`: it measures the throughput and latency of
// the profiles services next to their ceilings (an empty handler on the
// same router, and Kafka's own ProducerPerformance and ConsumerPerformance),
// all in the same run, and writes the report (see BENCH.md). It expects a
// running broker (deploy/bench.sh starts one); it starts the services
// itself.
//
// bench growth [-png FILE] REPORT.json... prints the table of how memory,
// restarts and cold starts grow with the profiles over the runs whose
// reports (latest.json) it is given, and draws it into FILE.
package main

import (
	"context"
	"flag"
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
	if len(os.Args) > 1 && os.Args[1] == "growth" {
		return growth(os.Args[2:])
	}
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

func growth(args []string) error {
	fs := flag.NewFlagSet("bench growth", flag.ExitOnError)
	png := fs.String("png", "", "the chart to write (empty: none)")
	_ = fs.Parse(args)
	points, err := bench.ReadGrowth(fs.Args())
	if err != nil {
		return err
	}
	fmt.Print(bench.GrowthMarkdown(points))
	if *png == "" {
		return nil
	}
	return bench.GrowthChart(points, *png)
}
