// Command replicator feeds another system from the profiles topics: another
// Kafka cluster (SINK=kafka) or PostgreSQL (SINK=postgres). Run one process
// per sink.
//
// Its settings are in package profiles/projections/internal/service
// (RegisterReplicatorFlags), which wires it
// (ReplicatorConfig.NewApplication).
package main

import (
	"flag"
	"os"

	"profiles/platform/service"
	projections "profiles/projections/internal/service"
)

func main() {
	fs := flag.NewFlagSet(projections.ReplicatorName, flag.ExitOnError)
	cfg := projections.RegisterReplicatorFlags(fs)
	_ = fs.Parse(os.Args[1:])
	service.Exit(projections.ReplicatorName, service.Serve(projections.ReplicatorName, cfg.Common, cfg.Boot(), cfg.NewApplication))
}
