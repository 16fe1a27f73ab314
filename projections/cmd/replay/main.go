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
	"io"
	"os"
	"slices"

	"profiles/platform/observe"
	"profiles/platform/service"
	projections "profiles/projections/internal/service"
)

func main() {
	cmd, code := parseCommand(os.Args[1:], os.Stdout, os.Stderr)
	if cmd == "" {
		os.Exit(code)
	}
	fs := flag.NewFlagSet("replay "+cmd, flag.ExitOnError)
	cfg := projections.RegisterReplayFlags(fs)
	_ = fs.Parse(os.Args[2:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "replay %s: unexpected arguments %q (flags come as -name value)\n", cmd, fs.Args())
		fs.Usage()
		os.Exit(2)
	}
	err := run(cmd, cfg)
	if errors.As(err, new(projections.VerifyFailed)) {
		fmt.Fprintln(os.Stderr, "replay:", err)
		os.Exit(3)
	}
	service.Exit(projections.ReplayName, err)
}

// parseCommand reads the command from args (os.Args[1:]) before anything
// else happens: no key is loaded and no broker is dialled for a request
// for help or a command that does not exist. It returns the command to
// run, or "" and the exit status after writing the usage: to stdout, and
// 0, when help was asked for; to stderr, and 2, when the command is
// missing or unknown. "help COMMAND" prints that command's flags.
func parseCommand(args []string, stdout, stderr io.Writer) (cmd string, code int) {
	if len(args) == 0 {
		fmt.Fprint(stderr, projections.ReplayUsage)
		return "", 2
	}
	switch args[0] {
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, observe.BuildInfo().String(projections.ReplayName))
		return "", 0
	case "-h", "-help", "--help", "help":
		if args[0] == "help" && len(args) > 1 {
			if !slices.Contains(projections.ReplayCommands, args[1]) {
				fmt.Fprintf(stderr, "replay: unknown command %q\n\n%s", args[1], projections.ReplayUsage)
				return "", 2
			}
			fs := flag.NewFlagSet("replay "+args[1], flag.ContinueOnError)
			projections.RegisterReplayFlags(fs)
			fs.SetOutput(stdout)
			fmt.Fprintf(stdout, "usage: replay %s [flags]\n\nFlags (a flag whose description names an env variable can also be set with it):\n", args[1])
			fs.PrintDefaults()
			return "", 0
		}
		fmt.Fprint(stdout, projections.ReplayUsage)
		return "", 0
	}
	if !slices.Contains(projections.ReplayCommands, args[0]) {
		fmt.Fprintf(stderr, "replay: unknown command %q\n\n%s", args[0], projections.ReplayUsage)
		return "", 2
	}
	return args[0], 0
}

func run(cmd string, cfg *projections.ReplayConfig) error {
	if slices.Contains(projections.ReplayOffline, cmd) {
		return cfg.RunOffline(cmd, os.Stdout)
	}
	log, err := cfg.Logger()
	if err != nil {
		return err
	}
	return service.Start(projections.ReplayName, log, cfg.Kafka, func(ctx context.Context, boot *service.Boot) error {
		return cfg.Run(ctx, boot, cmd, os.Stdout)
	})
}
