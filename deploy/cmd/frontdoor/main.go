// Command frontdoor serves the whole API on one address, routing reads to
// query-svc and writes to command-svc: a request by uid to the instance
// that owns it, any other over the instances in turn.
//
// Its settings are in package profiles/deploy/frontdoor (RegisterFlags),
// which wires it (Config.NewApplication).
package main

import (
	"flag"
	"os"

	"profiles/deploy/frontdoor"
	"profiles/platform/service"
)

func main() {
	fs := flag.NewFlagSet(frontdoor.Name, flag.ExitOnError)
	cfg := frontdoor.RegisterFlags(fs)
	_ = fs.Parse(os.Args[1:])
	service.Exit(frontdoor.Name, service.Serve(frontdoor.Name, cfg.Common, nil, cfg.NewApplication))
}
