// Command projector folds the event log into the compacted snapshot topic.
//
// Its settings are in package profiles/projections/internal/service
// (RegisterProjectorFlags), which wires it (ProjectorConfig.NewApplication).
package main

import (
	"flag"
	"os"

	"profiles/platform/service"
	projections "profiles/projections/internal/service"
)

func main() {
	fs := flag.NewFlagSet(projections.ProjectorName, flag.ExitOnError)
	cfg := projections.RegisterProjectorFlags(fs)
	_ = fs.Parse(os.Args[1:])
	service.Exit(projections.ProjectorName, service.Serve(projections.ProjectorName, cfg.Common, cfg.Kafka, cfg.NewApplication))
}
