// Package bench is `make bench`: it measures the profiles services'
// throughput and latency next to their ceilings, measured in the same run,
// and reports every figure with its ceiling and their ratio (see BENCH.md
// at the root of the repository).
//
//   - loadgen.go: the load generator, closed loop at maximum and open loop
//     at fixed rates (latency from the intended send time), with
//     HdrHistogram percentiles;
//   - ceiling.go: the HTTP ceiling, an empty handler on the services'
//     router stack;
//   - kafka.go: seeding the event log, and Kafka's own ProducerPerformance
//     and ConsumerPerformance, and the replay CLI's summary;
//   - system.go: building the binaries (with a pprof listener added by
//     go build -overlay), starting and stopping them, RSS and CPU time;
//   - run.go: the run itself, scenario by scenario;
//   - profile.go: CPU profiles and goroutine dumps;
//   - report.go: the report as JSON, markdown, BENCH.md's results section
//     and a PNG chart.
//
// deploy/cmd/bench is its command; deploy/bench.sh starts a broker for it.
package bench
