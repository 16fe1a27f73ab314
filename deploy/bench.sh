#!/usr/bin/env bash
# deploy/bench.sh: `make bench`. Measures the services' throughput and
# latency next to their ceilings, measured in the same run (see BENCH.md).
#
# It wipes .data/bench, starts a Kafka broker of its own (127.0.0.1:29392,
# controller 29393, data in .data/bench/kafka), builds and runs the bench
# (deploy/cmd/bench), which starts the services on 29400-29405 (pprof on
# 29420-29425) with their views and logs in .data/bench/run, and stops the
# broker by PID whatever happens. Arguments go to the bench, e.g.
#
#   deploy/bench.sh -size full          # 1,000,000 profiles, 10 s per run
#   deploy/bench.sh -profiles 50000     # the default preset, fewer profiles
#   deploy/bench.sh -h                  # every flag
#
# Results: the markdown table on stdout, deploy/bench/results/{latest.json,
# latest.md,latency.png,profiles/}, and the results section of BENCH.md.
# BENCH_DATA, BENCH_KAFKA_PORT and BENCH_KAFKA_CONTROLLER_PORT move it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATA=${BENCH_DATA:-.data/bench}
PORT=${BENCH_KAFKA_PORT:-29392}
CONTROLLER_PORT=${BENCH_KAFKA_CONTROLLER_PORT:-29393}

case $DATA in
  .data/* | */.data/*) ;;
  *) echo "bench.sh: BENCH_DATA must be under .data/ (it is wiped), got '$DATA'" >&2; exit 2 ;;
esac

# A broker left behind by an interrupted run is stopped (by its PID file)
# before its data is wiped.
deploy/kafka.sh stop --data "$DATA/kafka" >/dev/null 2>&1 || true
rm -rf "$DATA"
mkdir -p "$DATA"

echo "bench: building deploy/cmd/bench"
(cd deploy && go build -o "../$DATA/bench" ./cmd/bench)

trap 'deploy/kafka.sh stop --data "$DATA/kafka" >/dev/null 2>&1 || true' EXIT
# As make test's broker: small offsets and transaction-state topics, so
# that groups and transactional producers start quickly on a small machine.
# The broker's CPU profiles (Java Flight Recordings, deploy/bench/jfr.go)
# attribute a sample to the request its thread handles by a frame near the
# bottom of the stack: JFR keeps 64 frames unless told otherwise.
KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:-} -XX:FlightRecorderOptions=stackdepth=256" \
  deploy/kafka.sh start --fresh --data "$DATA/kafka" --port "$PORT" --controller-port "$CONTROLLER_PORT" \
  --extra offsets.topic.num.partitions=4 transaction.state.log.num.partitions=4

"$DATA/bench" -repo . -brokers "127.0.0.1:$PORT" -kafka-data "$DATA/kafka" -data "$DATA/run" \
  -port-base 29400 -out deploy/bench/results -bench-md BENCH.md "$@"
