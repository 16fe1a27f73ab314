// Command replay rebuilds derived data from the event log. Run it with no
// arguments for its usage.
//
// Its settings and commands are in package
// profiles/projections/internal/service (RegisterReplayFlags,
// ReplayConfig.Run).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"profiles/platform/observe"
	"profiles/platform/service"
	projections "profiles/projections/internal/service"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "help" {
		fmt.Fprint(os.Stderr, projections.ReplayUsage)
		os.Exit(2)
	}
	if os.Args[1] == "-version" || os.Args[1] == "--version" || os.Args[1] == "version" {
		fmt.Println(observe.BuildInfo().String(projections.ReplayName))
		return
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet("replay "+cmd, flag.ExitOnError)
	cfg := projections.RegisterReplayFlags(fs)
	_ = fs.Parse(os.Args[2:])
	err := run(cmd, cfg)
	if errors.As(err, new(projections.VerifyFailed)) {
		fmt.Fprintln(os.Stderr, "replay:", err)
		os.Exit(3)
	}
	service.Exit(projections.ReplayName, err)
}

func run(cmd string, cfg *projections.ReplayConfig) error {
	log, err := cfg.Logger()
	if err != nil {
		return err
	}
	return service.Start(projections.ReplayName, log, cfg.Kafka, func(ctx context.Context, boot *service.Boot) error {
		return cfg.Run(ctx, boot, cmd, os.Stdout)
	})
}
