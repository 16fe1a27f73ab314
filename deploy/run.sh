#!/usr/bin/env bash
# deploy/run.sh: run every profiles service locally against the broker of
# `make up`, in the foreground. `make run` builds the binaries and calls this.
# Ctrl-C (or SIGTERM) stops the services gracefully, by PID; Kafka keeps
# running until `make down`. Logs go to .data/logs/<service>.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:9092}
export LOG_FORMAT=${LOG_FORMAT:-text}
LOGS=.data/logs
mkdir -p "$LOGS" .data/query

pids=()
stopped=
stop() {
  [[ -n $stopped ]] && return
  stopped=1
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
  env "$@" >>"$LOGS/$name.log" 2>&1 &
  pids+=($!)
  echo "started $name (pid $!), log $LOGS/$name.log"
}

start query-svc   HTTP_ADDR=127.0.0.1:8082 DATA_DIR=.data/query bin/query-svc
start projector   HTTP_ADDR=127.0.0.1:8083 bin/projector
start command-svc HTTP_ADDR=127.0.0.1:8081 QUERY_URL=http://127.0.0.1:8082 bin/command-svc
start frontdoor   HTTP_ADDR=:8080 COMMAND_URL=http://127.0.0.1:8081 QUERY_URL=http://127.0.0.1:8082 bin/frontdoor

printf 'waiting for readiness'
for _ in $(seq 1 120); do
  if curl -fsS -o /dev/null http://127.0.0.1:8080/readyz 2>/dev/null &&
     curl -fsS -o /dev/null http://127.0.0.1:8083/readyz 2>/dev/null; then
    echo; echo "ready: the API is on http://localhost:8080 (Ctrl-C stops the services)"
    break
  fi
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo; echo "a service exited during start-up; the last log lines:" >&2
      tail -n 5 "$LOGS"/*.log >&2
      exit 1
    fi
  done
  printf '.'; sleep 1
done

# Wait until a service exits or we are told to stop.
wait -n "${pids[@]}" || true
echo "a service exited; see $LOGS" >&2
exit 1
