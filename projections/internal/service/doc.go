// Package service is the composition root of the projections binaries:
// for each, its configuration (RegisterProjectorFlags,
// RegisterReplicatorFlags, RegisterReplayFlags) and what wires it on a
// service.Boot: ProjectorConfig.NewApplication and
// ReplicatorConfig.NewApplication return the service that main runs, and
// ReplayConfig.Run runs one command of the replay tool.
package service
