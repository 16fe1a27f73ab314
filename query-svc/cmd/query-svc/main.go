// Command query-svc serves GET /api/profile/{uid}, its /history and GET
// /api/search from a Pebble view of the partitions it owns in its consumer
// group (snapshots, email index and event log), and forwards requests for
// other partitions to their owners. With REPLICA_MODE=full it materializes
// every partition and never forwards. Any instance also serves the change
// stream GET /api/changes, straight from the snapshot topic.
//
// Its settings are in package profiles/query-svc/internal/service
// (RegisterFlags), which wires it (Config.NewApplication).
package main

import (
	"flag"
	"os"

	"profiles/platform/service"
	querysvc "profiles/query-svc/internal/service"
)

func main() {
	fs := flag.NewFlagSet(querysvc.Name, flag.ExitOnError)
	cfg := querysvc.RegisterFlags(fs)
	_ = fs.Parse(os.Args[1:])
	service.Exit(querysvc.Name, service.Serve(querysvc.Name, cfg.Common, cfg.Kafka, cfg.NewApplication))
}
