#!/usr/bin/env bash
# deploy/test.sh: `make test`. Starts a Kafka broker of the tests' own
# (ports 19092/19093, data in .data/test-kafka, wiped first, so the data of
# `make run` is never touched) and a PostgreSQL server (port 15432, data in
# .data/test-postgres, wiped first), and, for the deploy module, a
# three-node cluster and a SASL_SSL broker (below), runs the tests of every
# module with GOWORK=off (so a missing require fails here, not in someone's
# build), and stops them all by PID whatever happens.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# TEST_MODULES, TEST_KAFKA_DATA and TEST_KAFKA_PORT (and TEST_POSTGRES_*,
# below) let several runs share a machine (for example: TEST_MODULES=deploy
# GOTESTFLAGS="-run History"); such runs also need disjoint
# PROFILES_TEST_PORTS=lo-hi (default 21000-27000) and PROFILES_BENCH_PORTS
# (default 27000-29000) for the processes the tests start.
read -r -a MODULES <<<"${TEST_MODULES:-events platform projections command-svc query-svc deploy}"
DATA=${TEST_KAFKA_DATA:-.data/test-kafka}
PORT=${TEST_KAFKA_PORT:-19092}
CONTROLLER_PORT=${TEST_KAFKA_CONTROLLER_PORT:-19093}

# Test-only broker settings: a cleaner that looks for work every half second
# (the compaction test), and a small offsets topic so groups form quickly.
deploy/kafka.sh start --fresh --data "$DATA" --port "$PORT" --controller-port "$CONTROLLER_PORT" \
  --extra log.cleaner.backoff.ms=500 offsets.topic.num.partitions=4 transaction.state.log.num.partitions=4
trap 'deploy/kafka.sh stop --data "$DATA" >/dev/null 2>&1 || true' EXIT

# PostgreSQL for the replicator's sink (TEST_POSTGRES_PORT, TEST_POSTGRES_DATA
# let runs share a machine). Test-only: no fsync, trust auth on loopback.
PG_DATA=${TEST_POSTGRES_DATA:-.data/test-postgres}
PG_PORT=${TEST_POSTGRES_PORT:-15432}
trap 'deploy/postgres.sh stop --data "$PG_DATA" >/dev/null 2>&1 || true; deploy/kafka.sh stop --data "$DATA" >/dev/null 2>&1 || true' EXIT
deploy/postgres.sh start --fresh --data "$PG_DATA" --port "$PG_PORT" --db profiles_test \
  --extra fsync=off synchronous_commit=off full_page_writes=off
export PROFILES_TEST_POSTGRES="postgres://postgres@127.0.0.1:$PG_PORT/profiles_test?sslmode=disable"

# The fault suite's three-node cluster (deploy/e2e/faults_test.go), only when
# the deploy module is tested: ports TEST_CLUSTER_PORT..+2, controllers +10..+12.
CLUSTER_DATA=${TEST_CLUSTER_DATA:-.data/test-cluster}
CLUSTER_PORT=${TEST_CLUSTER_PORT:-19192}
if [[ " ${MODULES[*]} " == *" deploy "* ]]; then
  trap 'deploy/kafka.sh stop-cluster --data "$CLUSTER_DATA" >/dev/null 2>&1 || true; deploy/postgres.sh stop --data "$PG_DATA" >/dev/null 2>&1 || true; deploy/kafka.sh stop --data "$DATA" >/dev/null 2>&1 || true' EXIT
  # Under root every node gets a group id of its own (--gids), by which the
  # fault suite cuts a broker off from the others (network partitions).
  gids=()
  [[ $(id -u) == 0 ]] && gids=(--gids)
  deploy/kafka.sh start-cluster --fresh --data "$CLUSTER_DATA" --base-port "$CLUSTER_PORT" ${gids[@]+"${gids[@]}"} \
    --extra offsets.topic.num.partitions=4 transaction.state.log.num.partitions=4
  export PROFILES_TEST_KAFKA_CLUSTER=127.0.0.1:$CLUSTER_PORT,127.0.0.1:$((CLUSTER_PORT + 1)),127.0.0.1:$((CLUSTER_PORT + 2))
  export PROFILES_TEST_KAFKA_CLUSTER_DATA=$PWD/$CLUSTER_DATA
  export PROFILES_RELIABILITY_REPORT=$PWD/docs/reliability.md
fi

# A secured broker for the Kafka security tests (deploy/e2e/kafka_security_test.go,
# kafka_oauth_test.go), only when the deploy module is tested: SASL_SSL with a
# SCRAM user per service, certificates made with openssl in its data dir
# (wiped first), and the StandardAuthorizer (the tests create the ACLs, as
# admin). It takes OAUTHBEARER too: devtoken makes an ES256 key pair in
# TEST_KAFKA_SECURE_DATA.oauth (wiped first), the broker validates tokens
# against its JWKS file with Kafka's own validator, and the tests sign the
# tokens of their own token endpoint with its private key. Ports
# TEST_KAFKA_SECURE_PORT and TEST_KAFKA_SECURE_CONTROLLER_PORT.
SECURE_DATA=${TEST_KAFKA_SECURE_DATA:-.data/test-kafka-secure}
SECURE_PORT=${TEST_KAFKA_SECURE_PORT:-19096}
SECURE_CONTROLLER_PORT=${TEST_KAFKA_SECURE_CONTROLLER_PORT:-19097}
if [[ " ${MODULES[*]} " == *" deploy "* ]]; then
  command -v openssl >/dev/null || { echo "deploy/test.sh: openssl is needed (the SASL_SSL broker's certificates)" >&2; exit 1; }
  trap 'deploy/kafka.sh stop --data "$SECURE_DATA" >/dev/null 2>&1 || true; deploy/kafka.sh stop-cluster --data "$CLUSTER_DATA" >/dev/null 2>&1 || true; deploy/postgres.sh stop --data "$PG_DATA" >/dev/null 2>&1 || true; deploy/kafka.sh stop --data "$DATA" >/dev/null 2>&1 || true' EXIT
  OAUTH_DIR=$PWD/${SECURE_DATA:?}.oauth
  rm -rf -- "$OAUTH_DIR"
  (cd deploy && GOWORK=off go run ./cmd/devtoken init -dir "$OAUTH_DIR" -audience profiles-kafka -issuer profiles-kafka-test >/dev/null)
  deploy/kafka.sh start --fresh --sasl-ssl --users "command-svc query-svc projector replay replicator" \
    --oauth-jwks "$OAUTH_DIR/jwks.json" --oauth-audience profiles-kafka \
    --data "$SECURE_DATA" --port "$SECURE_PORT" --controller-port "$SECURE_CONTROLLER_PORT" \
    --extra offsets.topic.num.partitions=4 transaction.state.log.num.partitions=4
  # The CA is DIR/tls/ca.pem; user U's password is in DIR/secrets/U.password;
  # the OAuth signing key, its JWKS and audience are in OAUTH_DIR.
  export PROFILES_TEST_KAFKA_SECURE=127.0.0.1:$SECURE_PORT
  export PROFILES_TEST_KAFKA_SECURE_DIR=$PWD/$SECURE_DATA
  export PROFILES_TEST_KAFKA_OAUTH_DIR=$OAUTH_DIR
fi

# schemathesis, from PyPI into .cache/, for the property-based API test
# (deploy/e2e/schemathesis_test.go).
if [[ " ${MODULES[*]} " == *" deploy "* ]]; then
  deploy/schemathesis.sh install
  PROFILES_SCHEMATHESIS=$(deploy/schemathesis.sh path)
  export PROFILES_SCHEMATHESIS
fi

export PROFILES_TEST_KAFKA=127.0.0.1:$PORT
export PROFILES_TEST_KAFKA_DATA=$PWD/$DATA
export PROFILES_REQUIRE_KAFKA=1

# The e2e harness records how long each test that starts a system ran;
# the slowest are printed after the tests.
export PROFILES_TEST_TIMES=$PWD/$DATA-times.tsv
rm -f "$PROFILES_TEST_TIMES"
# A fault scenario over the single-fault aim, and a rolling restart with
# failed requests, write what the services and brokers said meanwhile;
# printed last, where the tail of the output shows it.
export PROFILES_TEST_DIGESTS=$PWD/$DATA-digests.txt
rm -f "$PROFILES_TEST_DIGESTS"

status=0
for m in "${MODULES[@]}"; do
  echo "==== go test: $m"
  (cd "$m" && GOWORK=off go test -count=1 -timeout 45m ${GOTESTFLAGS:-} ./...) || status=1
done

if [[ -s $PROFILES_TEST_TIMES ]]; then
  echo "==== the slowest end-to-end tests (seconds from the start of their system; all: $PROFILES_TEST_TIMES)"
  awk -F'\t' '{s[$2] += $1; r[$2] = $3} END {for (n in s) printf "%7.1f  %s  %s\n", s[n], n, r[n]}' "$PROFILES_TEST_TIMES" | sort -rn | head -20
  awk -F'\t' '{s += $1} END {printf "%7.1f  in all, %d systems\n", s, NR}' "$PROFILES_TEST_TIMES"
fi

# Every fuzz target, briefly (TEST_FUZZ=0 skips; `make fuzz` runs longer).
if [[ ${TEST_FUZZ:-1} != 0 ]]; then
  echo "==== fuzz: every target for ${FUZZTIME:-5s}"
  FUZZTIME=${FUZZTIME:-5s} deploy/fuzz.sh || status=1
fi

if [[ -s $PROFILES_TEST_DIGESTS ]]; then
  echo "==== digests: what the services and brokers said while a fault scenario acknowledged no write for longer than its aim, or while a rolling restart's requests failed (also in $PROFILES_TEST_DIGESTS)"
  cat "$PROFILES_TEST_DIGESTS"
fi
exit $status
