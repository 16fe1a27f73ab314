// Command command-svc accepts POST, PUT and DELETE on /api/profile. Each
// instance owns some partitions of the event log in its consumer group;
// it runs the commands on profiles of those partitions, checking them
// against the folded state, and forwards the others to their owners.
//
// Its settings are in package profiles/command-svc/internal/service
// (RegisterFlags), which wires it (Config.NewApplication).
package main

import (
	"flag"
	"os"

	commandsvc "profiles/command-svc/internal/service"
	"profiles/platform/service"
)

func main() {
	fs := flag.NewFlagSet(commandsvc.Name, flag.ExitOnError)
	cfg := commandsvc.RegisterFlags(fs)
	_ = fs.Parse(os.Args[1:])
	service.Exit(commandsvc.Name, service.Serve(commandsvc.Name, cfg.Common, cfg.Kafka, cfg.NewApplication))
}
