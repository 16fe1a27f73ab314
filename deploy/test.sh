#!/usr/bin/env bash
# deploy/test.sh: `make test`. Starts a Kafka broker of the tests' own
# (ports 19092/19093, data in .data/test-kafka, wiped first, so the data of
# `make run` is never touched), runs the tests of every module with
# GOWORK=off (so a missing require fails here, not in someone's build), and
# stops the broker by PID whatever happens.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# TEST_MODULES, TEST_KAFKA_DATA and TEST_KAFKA_PORT let several runs share a
# machine (for example: TEST_MODULES=deploy GOTESTFLAGS="-run History").
read -r -a MODULES <<<"${TEST_MODULES:-events platform projections command-svc query-svc deploy}"
DATA=${TEST_KAFKA_DATA:-.data/test-kafka}
PORT=${TEST_KAFKA_PORT:-19092}
CONTROLLER_PORT=${TEST_KAFKA_CONTROLLER_PORT:-19093}

# Test-only broker settings: a cleaner that looks for work every half second
# (the compaction test), and a small offsets topic so groups form quickly.
deploy/kafka.sh start --fresh --data "$DATA" --port "$PORT" --controller-port "$CONTROLLER_PORT" \
  --extra log.cleaner.backoff.ms=500 offsets.topic.num.partitions=4 transaction.state.log.num.partitions=4
trap 'deploy/kafka.sh stop --data "$DATA" >/dev/null 2>&1 || true' EXIT

export PROFILES_TEST_KAFKA=127.0.0.1:$PORT
export PROFILES_TEST_KAFKA_DATA=$PWD/$DATA
export PROFILES_REQUIRE_KAFKA=1

status=0
for m in "${MODULES[@]}"; do
  echo "==== go test: $m"
  (cd "$m" && GOWORK=off go test -count=1 -timeout 25m ${GOTESTFLAGS:-} ./...) || status=1
done
exit $status
