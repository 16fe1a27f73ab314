#!/usr/bin/env bash
# deploy/postgres.sh: run a real PostgreSQL server (Debian's `postgresql`
# package, no Docker) for tests and local dev, in a data directory of its own.
#
#   deploy/postgres.sh start --data DIR --port N [--db NAME]... [--fresh]
#                            [--timeout SECONDS] [--extra key=value...]
#       initdb DIR's cluster if needed (superuser `postgres`, trust auth on
#       the unix socket and on 127.0.0.1 only), start the server on
#       127.0.0.1:N with its unix socket in the cluster directory, wait until
#       it accepts connections (default 60s), and create each --db (default:
#       profiles) if missing. --fresh stops any server in DIR and wipes DIR
#       first. --extra settings (postgresql.conf syntax, e.g. fsync=off) and
#       the port are rewritten on every start. Connect with
#       postgres://postgres@127.0.0.1:N/NAME?sslmode=disable.
#       Files in DIR: postgres.pid (the postmaster's PID), cluster/ (pgdata/,
#       postgres.log, the socket). Running as root, the server runs as the
#       `postgres` OS user (PostgreSQL refuses root), which owns cluster/;
#       if that user cannot reach DIR (say, under /root), cluster is a
#       symlink to a directory under /tmp.
#
#   deploy/postgres.sh stop --data DIR
#       pg_ctl stop -m fast (up to 30s), else SIGTERM, then SIGQUIT, by PID.
#
#   deploy/postgres.sh status --data DIR
#       Print "running ..." (exit 0) or "stopped" (exit 1).
#
#   deploy/postgres.sh bindir
#       Print the directory of the server binaries (initdb, postgres,
#       pg_ctl), or fail if PostgreSQL is not installed.
#
# Environment: PG_BINDIR (the binaries' directory; found otherwise with
# `pg_config --bindir`, then /usr/lib/postgresql/*/bin, then PATH).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
START_TIMEOUT=${POSTGRES_START_TIMEOUT:-60}
STOP_TIMEOUT=30

# shellcheck source=deploy/lib.sh
source "$SCRIPT_DIR/lib.sh"

# ---------------------------------------------------------------- helpers

# Prints the directory holding initdb, postgres and pg_ctl.
find_bindir() {
  local d
  for d in ${PG_BINDIR:-} "$(pg_config --bindir 2>/dev/null || true)" \
      $(printf "%s\n" /usr/lib/postgresql/*/bin | sort -t/ -k5 -V -r) \
      "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"; do
    if [[ -n $d && -x $d/initdb && -x $d/postgres && -x $d/pg_ctl ]]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

BIN=''
need_bin() {
  BIN=$(find_bindir) || die "PostgreSQL server binaries not found (install Debian's postgresql package, or set PG_BINDIR)"
}

IS_ROOT=0
[[ $(id -u) == 0 ]] && IS_ROOT=1

# as_pg CMD...: run as the postgres OS user when we are root.
# From /, because the caller's directory may be closed to that user.
as_pg() {
  if (( IS_ROOT )); then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Sets CLUSTER: where pgdata/, the log and the socket live (DIR/cluster,
# or the /tmp directory it links to).
CLUSTER=''
resolve_cluster() {
  local link=$DATA/cluster
  if [[ -e $link ]]; then
    CLUSTER=$(cd "$link" && pwd -P)
    return 0
  fi
  [[ -L $link ]] && rm -f "$link" # dangling: its /tmp directory is gone
  (( IS_ROOT )) && ! id postgres >/dev/null 2>&1 &&
    die "running as root, but there is no 'postgres' OS user to run the server (install Debian's postgresql package)"
  mkdir -p "$link"
  (( IS_ROOT )) && chown postgres: "$link"
  # The socket path must fit in sun_path (107 bytes).
  if as_pg test -w "$link" && (( ${#link} < 80 )); then
    CLUSTER=$(cd "$link" && pwd -P)
  else
    rmdir "$link"
    CLUSTER=$(mktemp -d "${TMPDIR:-/tmp}/profiles-postgres.XXXXXX")
    chmod 755 "$CLUSTER"
    (( IS_ROOT )) && chown postgres: "$CLUSTER"
    ln -s "$CLUSTER" "$link"
    log "the postgres user cannot use $link; the cluster lives in $CLUSTER"
  fi
}

# Prints the PID of the live postmaster of DATA, or fails.
live_pid() {
  local pid='' f
  for f in "$DATA/postgres.pid" "$DATA/cluster/pgdata/postmaster.pid"; do
    [[ -f $f ]] && pid=$(head -n 1 "$f" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] && break
    pid=''
  done
  [[ -n $pid ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled PID: it must be a postgres of this directory.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE "postgres.* -D [^ ]*/pgdata" || return 1
  [[ $(readlink -f "/proc/$pid/cwd" 2>/dev/null) == "$(readlink -f "$DATA/cluster/pgdata" 2>/dev/null)" ]] || return 1
  echo "$pid"
}

show_log() {
  log "----- tail of $DATA/cluster/postgres.log -----"
  tail -n 40 "$DATA/cluster/postgres.log" >&2 2>/dev/null || true
}

stop_server() {
  local pid
  if ! pid=$(live_pid); then
    rm -f "$DATA/postgres.pid"
    return 0
  fi
  need_bin
  local t0
  t0=$(now_ms)
  log "stopping postgres in $DATA (pid $pid)"
  if ! as_pg "$BIN/pg_ctl" stop -D "$(readlink -f "$DATA/cluster/pgdata")" -m fast -w -t "$STOP_TIMEOUT" >/dev/null 2>&1; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "postgres (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGQUIT (immediate shutdown)"
      kill -QUIT "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
  fi
  rm -f "$DATA/postgres.pid"
  log "stopped in $(( $(now_ms) - t0 )) ms"
}

# --fresh wipes DIR, but only if everything in it is ours.
safe_wipe() {
  local entry
  [[ $DATA != / && $DATA != "$HOME" && $REPO_ROOT != "$DATA" && $REPO_ROOT != "$DATA"/* ]] ||
    die "refusing to wipe $DATA"
  for entry in "$DATA"/* "$DATA"/.[!.]*; do
    [[ -e $entry || -L $entry ]] || continue
    case ${entry##*/} in
      cluster | postgres.pid | .postgres.sh.lock) ;;
      *) die "refusing to wipe $DATA: it holds $entry, which deploy/postgres.sh did not create" ;;
    esac
  done
  if [[ -L $DATA/cluster ]]; then
    local target
    target=$(readlink "$DATA/cluster")
    [[ $target == */profiles-postgres.* ]] && rm -rf "$target"
  fi
  rm -rf "$DATA/cluster" "$DATA/postgres.pid"
}

# ---------------------------------------------------------------- commands

DATA='' PORT='' FRESH=0
DBS=() EXTRA=()
parse_args() {
  while (( $# > 0 )); do
    case $1 in
      --data) DATA=${2:?--data needs a directory}; shift 2 ;;
      --port) PORT=${2:?--port needs a number}; shift 2 ;;
      --db) DBS+=("${2:?--db needs a name}"); shift 2 ;;
      --timeout) START_TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
      --fresh) FRESH=1; shift ;;
      --extra) take_extra "$@"; shift "$TAKEN" ;; # one or more key=value words
      -h | --help) usage ;;
      *) die "unknown argument: $1 (see: $0 --help)" ;;
    esac
  done
  local db
  for db in ${DBS[@]+"${DBS[@]}"}; do
    [[ $db =~ ^[a-z_][a-z0-9_]*$ ]] || die "--db must be a plain lower-case identifier, got '$db'"
  done
  check_args PORT START_TIMEOUT
}

# Serialize start/stop on one data dir (fd 8; closed for the server itself).
lock_data() { exec 8>"$DATA/.postgres.sh.lock"; flock 8; }

cmd_start() {
  parse_args "$@"
  [[ -n $PORT ]] || die "--port N is required"
  (( ${#DBS[@]} > 0 )) || DBS=(profiles)
  lock_data
  need_bin
  local t0 pid
  t0=$(now_ms)
  if (( FRESH )); then
    stop_server
    safe_wipe
  fi
  resolve_cluster
  local pgdata=$CLUSTER/pgdata
  if pid=$(live_pid); then
    log "already running in $DATA (pid $pid)"
  else
    port_open "$PORT" && die "port 127.0.0.1:$PORT is already in use"
    if [[ ! -f $pgdata/PG_VERSION ]]; then
      rm -rf "$pgdata"
      local out
      if ! out=$(as_pg "$BIN/initdb" -D "$pgdata" -U postgres -A trust -E UTF8 --no-locale 2>&1); then
        printf '%s\n' "$out" >&2
        die "initdb in $pgdata failed"
      fi
      log "initialized $pgdata ($("$BIN/postgres" --version))"
    fi
    # Trust, but only on the unix socket and loopback: a test cluster.
    as_pg tee "$pgdata/pg_hba.conf" >/dev/null <<'EOF'
# Written by deploy/postgres.sh on every start; edits are lost.
local all all               trust
host  all all 127.0.0.1/32  trust
EOF
    {
      echo "# Written by deploy/postgres.sh on every start; edits are lost."
      echo "listen_addresses = '127.0.0.1'"
      echo "port = $PORT"
      echo "unix_socket_directories = '$CLUSTER'"
      if (( ${#EXTRA[@]} > 0 )); then
        echo "# --extra"
        printf '%s\n' "${EXTRA[@]}"
      fi
    } | as_pg tee "$pgdata/postgres.sh.conf" >/dev/null
    grep -qxF "include_if_exists = 'postgres.sh.conf'" "$pgdata/postgresql.conf" ||
      echo "include_if_exists = 'postgres.sh.conf'" | as_pg tee -a "$pgdata/postgresql.conf" >/dev/null
    # pg_ctl detaches the server (setsid), so it outlives this script and
    # ignores the caller's Ctrl-C; -w waits until it accepts connections.
    if ! (as_pg "$BIN/pg_ctl" start -D "$pgdata" -l "$CLUSTER/postgres.log" -w -t "$START_TIMEOUT" 8>&- >/dev/null 2>&1); then
      log "postgres in $DATA did not start within ${START_TIMEOUT}s"
      show_log
      stop_server
      exit 1
    fi
    head -n 1 "$pgdata/postmaster.pid" >"$DATA/postgres.pid"
    pid=$(live_pid) || { show_log; die "postgres in $DATA started but is not running"; }
  fi
  local port db
  port=$(sed -n 's/^port = //p' "$pgdata/postgres.sh.conf")
  for db in "${DBS[@]}"; do
    if [[ $(as_pg "$BIN/psql" -h "$CLUSTER" -p "$port" -U postgres -d postgres -XAtq \
        -c "SELECT 1 FROM pg_database WHERE datname = '$db'") != 1 ]]; then
      as_pg "$BIN/createdb" -h "$CLUSTER" -p "$port" -U postgres "$db"
      log "created database $db"
    fi
  done
  log "postgres ready on 127.0.0.1:$port (pid $pid, data $DATA) in $(( $(now_ms) - t0 )) ms"
}

cmd_stop() {
  parse_args "$@"
  lock_data
  stop_server
}

cmd_status() {
  parse_args "$@"
  local pid port
  if pid=$(live_pid); then
    port=$(sed -n 's/^port = //p' "$DATA/cluster/pgdata/postgres.sh.conf" 2>/dev/null || echo '?')
    echo "running (pid $pid, 127.0.0.1:$port, data $DATA)"
  else
    echo "stopped ($DATA)"
    return 1
  fi
}

main() {
  (( $# > 0 )) || usage
  local cmd=$1
  shift
  case $cmd in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    bindir) find_bindir || die "PostgreSQL server binaries not found" ;;
    -h | --help | help) usage ;;
    *) die "unknown command: $cmd (see: $0 --help)" ;;
  esac
}

main "$@"
