# deploy/lib.sh: helpers shared by deploy/kafka.sh, deploy/postgres.sh and
# deploy/schemathesis.sh, which source it. It is not a command.
#
# log and die prefix their message with the sourcing script's name; usage
# prints that script's header comment (line 2 up to `set -euo`).

LIB_SCRIPT=${BASH_SOURCE[1]}

log() { printf '%s: %s\n' "${LIB_SCRIPT##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }
usage() { sed -n '2,/^set -euo/p' "$LIB_SCRIPT" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

abs_dir() { mkdir -p "$1" && (cd "$1" && pwd -P); }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# take_extra ARGS...: parses `--extra key=value...` at the start of ARGS:
# appends the key=value words that follow --extra to EXTRA and sets TAKEN to
# how many arguments that used (for the caller's shift).
take_extra() {
  [[ ${2:-} == *=* && ${2:-} != -* ]] || die "--extra needs key=value, got '${2:-}'"
  shift
  TAKEN=1
  while (( $# > 0 )) && [[ $1 == *=* && $1 != -* ]]; do EXTRA+=("$1"); shift; TAKEN=$((TAKEN + 1)); done
}

# check_args VAR...: the named variables are empty or numbers, and DATA (the
# --data directory) is given; DATA is made absolute, and created.
check_args() {
  local v
  for v in "$@"; do
    [[ -z ${!v} || ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
  done
  [[ -n $DATA ]] || die "--data DIR is required"
  DATA=$(abs_dir "$DATA")
}
