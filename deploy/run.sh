#!/usr/bin/env bash
# deploy/run.sh: run every profiles service locally against the broker of
# `make up`, in the foreground. `make run` builds the binaries and calls this.
#
# It starts INSTANCES (default 2) instances of each of query-svc, projector
# and command-svc, and one front door on :8080 that spreads requests over
# them. Instance i (0-based) listens on
#
#   command-svc-i  127.0.0.1:8081+10*i
#   query-svc-i    127.0.0.1:8082+10*i   (its view in .data/query-i)
#   projector-i    127.0.0.1:8083+10*i
#
# so with two instances: 8081-8083 and 8091-8093. Each gets INSTANCE_ID
# (e.g. query-svc-0) and ADVERTISE_URL (the URL other instances reach it on).
#
# Ctrl-C (or SIGTERM) stops the services gracefully, by PID; Kafka keeps
# running until `make down`. Logs go to .data/logs/<service>-<i>.log and
# .data/logs/frontdoor.log.
#
# Also read from the environment: KAFKA_BROKERS, LOG_FORMAT, AUTH_MODE (default
# off here; jwt: see below), RATE_LIMIT_RPS (default 0 here), PII_KEK or
# PII_KEK_FILE (default: a key generated once into .data/pii-kek); BIN_DIR
# (where the binaries are, default bin); PORT_BASE (default 8080: the front
# door's port, the instance ports above shift with it); RUN_DATA (default
# .data: where the views, logs and generated keys go); DRY_RUN=1 prints what
# would be started, with its environment, and starts nothing. Every other
# variable of the services (topics, groups, ...) passes through.
#
# AUTH_MODE=jwt without AUTH_JWKS_FILE or AUTH_JWKS_URL is the development
# identity provider: bin/devtoken keeps an ES256 key pair in
# .data/dev-auth (made once, reused), the services get its public JWKS
# (AUTH_JWKS_FILE), audience and issuer, and `make token` signs tokens
# with it. INTERNAL_SECRET, unless given (or INTERNAL_SECRET_FILE), is
# generated once into .data/internal-secret.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUN_DATA=${RUN_DATA:-.data}
export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:9092}
export LOG_FORMAT=${LOG_FORMAT:-text}
# Development: no authentication (the services warn about it in their logs)
# and no rate limit, so that the README's curl flow works as written. For
# tokens, run with AUTH_MODE=jwt (see above and docs/security.md).
export AUTH_MODE=${AUTH_MODE:-off}
export RATE_LIMIT_RPS=${RATE_LIMIT_RPS:-0}
# The key-encryption key of personal data (docs/threat-model.md): unless
# PII_KEK or PII_KEK_FILE is given, one is generated once into
# .data/pii-kek (mode 600) and kept, so profiles stay readable between
# runs. Losing it makes every profile's personal data unreadable.
if [[ -z ${PII_KEK:-} && -z ${PII_KEK_FILE:-} ]]; then
  export PII_KEK_FILE=$RUN_DATA/pii-kek
  if [[ -z ${DRY_RUN:-} && ! -s $PII_KEK_FILE ]]; then
    mkdir -p "$RUN_DATA"
    (umask 077 && head -c 32 /dev/urandom | base64 >"$PII_KEK_FILE.tmp" && mv "$PII_KEK_FILE.tmp" "$PII_KEK_FILE")
  fi
fi
INSTANCES=${INSTANCES:-2}
BIN_DIR=${BIN_DIR:-bin}
PORT_BASE=${PORT_BASE:-8080}
DRY_RUN=${DRY_RUN:-}
LOGS=$RUN_DATA/logs

# AUTH_MODE=jwt with no identity provider given: the development one.
DEV_AUTH=
if [[ $AUTH_MODE == jwt && -z ${AUTH_JWKS_FILE:-} && -z ${AUTH_JWKS_URL:-} ]]; then
  DEV_AUTH=$RUN_DATA/dev-auth
  if [[ -z $DRY_RUN ]]; then
    settings=$("$BIN_DIR/devtoken" init -dir "$DEV_AUTH")
    while IFS='=' read -r name value; do
      [[ $name == AUTH_* ]] && export "$name=$value"
    done <<<"$settings"
  else
    export AUTH_JWKS_FILE=$DEV_AUTH/jwks.json
  fi
fi
if [[ $AUTH_MODE == jwt && -z ${INTERNAL_SECRET:-} && -z ${INTERNAL_SECRET_FILE:-} ]]; then
  export INTERNAL_SECRET_FILE=$RUN_DATA/internal-secret
  if [[ -z $DRY_RUN && ! -s $INTERNAL_SECRET_FILE ]]; then
    mkdir -p "$RUN_DATA"
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$INTERNAL_SECRET_FILE.tmp" && mv "$INTERNAL_SECRET_FILE.tmp" "$INTERNAL_SECRET_FILE")
  fi
fi

if ! [[ $INSTANCES =~ ^[1-9][0-9]*$ ]]; then
  echo "run.sh: INSTANCES must be a positive whole number, got '$INSTANCES'" >&2
  exit 2
fi
if ! [[ $PORT_BASE =~ ^[1-9][0-9]*$ ]] || ((PORT_BASE + 10 * INSTANCES > 65535)); then
  echo "run.sh: PORT_BASE '$PORT_BASE' with $INSTANCES instances leaves the port range" >&2
  exit 2
fi

port() { # service, instance
  local offset
  case $1 in
    command-svc) offset=1 ;;
    query-svc) offset=2 ;;
    projector) offset=3 ;;
    *) echo "run.sh: no port for $1" >&2; return 1 ;;
  esac
  echo $((PORT_BASE + offset + 10 * $2))
}

join() { local IFS=,; echo "$*"; }

query_urls=() command_urls=() projector_urls=()
for ((i = 0; i < INSTANCES; i++)); do
  command_urls+=("http://127.0.0.1:$(port command-svc "$i")")
  query_urls+=("http://127.0.0.1:$(port query-svc "$i")")
  projector_urls+=("http://127.0.0.1:$(port projector "$i")")
done
COMMAND_URLS=$(join "${command_urls[@]}")
QUERY_URLS=$(join "${query_urls[@]}")
FRONTDOOR_URL=http://127.0.0.1:$PORT_BASE

if [[ -z $DRY_RUN ]]; then
  mkdir -p "$LOGS"
  for ((i = 0; i < INSTANCES; i++)); do mkdir -p "$RUN_DATA/query-$i"; done
  if [[ -d $RUN_DATA/query ]]; then
    echo "note: $RUN_DATA/query (the single-instance view) is no longer used; query-svc-0 keeps its view in $RUN_DATA/query-0 (the view rebuilds from Kafka; delete $RUN_DATA/query when you like)"
  fi
fi

pids=() names=()
stopped=
# shellcheck disable=SC2317 # only called by the traps
stop() {
  [[ -n $stopped ]] && return
  stopped=1
  ((${#pids[@]})) || return 0
  echo
  echo "stopping services: ${pids[*]}"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "services stopped; Kafka keeps running (make down stops it)"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

start() { # name, then env assignments, then the binary
  local name=$1; shift
  if [[ -n $DRY_RUN ]]; then
    printf '%s:' "$name"; printf ' %q' "$@"; echo
    return
  fi
  env "$@" >>"$LOGS/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
  echo "started $name (pid $!), log $LOGS/$name.log"
}

# start_instance service i [more env assignments]: one instance of service,
# with its address, identity and any extra settings.
start_instance() {
  local svc=$1 i=$2; shift 2
  local p
  p=$(port "$svc" "$i")
  start "$svc-$i" HTTP_ADDR="127.0.0.1:$p" ADVERTISE_URL="http://127.0.0.1:$p" INSTANCE_ID="$svc-$i" \
    "$@" "$BIN_DIR/$svc"
}

# dead: the names of the started processes that are no longer running.
dead() {
  local k
  for k in "${!pids[@]}"; do
    kill -0 "${pids[k]}" 2>/dev/null || echo "${names[k]}"
  done
}

for ((i = 0; i < INSTANCES; i++)); do start_instance query-svc "$i" DATA_DIR="$RUN_DATA/query-$i"; done
for ((i = 0; i < INSTANCES; i++)); do start_instance projector "$i" DATA_DIR="$RUN_DATA/projector-$i"; done
for ((i = 0; i < INSTANCES; i++)); do start_instance command-svc "$i" QUERY_URL="$QUERY_URLS" DATA_DIR="$RUN_DATA/command-$i"; done
start frontdoor HTTP_ADDR=":$PORT_BASE" COMMAND_URL="$COMMAND_URLS" QUERY_URL="$QUERY_URLS" "$BIN_DIR/frontdoor"

if [[ -n $DRY_RUN ]]; then
  echo "ready when: $FRONTDOOR_URL/readyz ${projector_urls[*]/%//readyz}"
  exit 0
fi

# Ready when the front door is (at least one instance of command-svc and of
# query-svc is) and every projector is.
ready() {
  local u
  for u in "$FRONTDOOR_URL" "${projector_urls[@]}"; do
    curl -fsS -o /dev/null "$u/readyz" 2>/dev/null || return 1
  done
}

# tail_dead what: report the started processes that are no longer running,
# with the last lines of their logs; false if there are none.
tail_dead() {
  local down name
  mapfile -t down < <(dead)
  ((${#down[@]})) || return 1
  echo "$1: ${down[*]}; the last log lines:" >&2
  for name in "${down[@]}"; do tail -n 5 "$LOGS/$name.log" | sed "s/^/$name: /" >&2; done
}

printf 'waiting for readiness of the front door and %d projector(s)' "$INSTANCES"
for n in $(seq 1 120); do
  if tail_dead $'\nexited during start-up'; then
    exit 1
  fi
  if ready; then
    echo; echo "ready: the API is on http://localhost:$PORT_BASE, over $INSTANCES instance(s) of each service (Ctrl-C stops the services)"
    if [[ -n $DEV_AUTH ]]; then
      echo "AUTH_MODE=jwt: every API request needs a bearer token signed with the development key in $DEV_AUTH:"
      echo "  TOKEN=\$(make -s token)   # SUB=<uid> (default: a new one, printed), SCOPES=\"profiles:read profiles:write\" (default) or profiles:admin, TTL=1h"
      echo "  curl -H \"Authorization: Bearer \$TOKEN\" http://localhost:$PORT_BASE/api/profile/<uid>"
      echo "Without profiles:admin a token may create, change and delete only the profile whose uid is its SUB."
    elif [[ $AUTH_MODE == jwt ]]; then
      echo "AUTH_MODE=jwt: every API request needs a bearer token from the identity provider of ${AUTH_JWKS_FILE:-$AUTH_JWKS_URL}"
    fi
    break
  fi
  if ((n == 120)); then
    echo; echo "not ready after 120 s; the services keep running (see $LOGS, Ctrl-C stops them)" >&2
    break
  fi
  printf '.'; sleep 1
done

# Wait until a service exits or we are told to stop.
wait -n "${pids[@]}" || true
tail_dead "a service exited" || echo "a service exited; see $LOGS" >&2
exit 1
