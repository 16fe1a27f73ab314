#!/usr/bin/env bash
# deploy/schemathesis.sh: install schemathesis (the property-based API tester,
# from PyPI) in a virtualenv of the repository's own, for the e2e test
# TestSchemathesisFindsNoServerErrorsAndNoResponseOutsideTheDocument.
#
#   deploy/schemathesis.sh install
#       Create the venv <repo>/.cache/schemathesis/<version> with
#       `python3 -m venv` and pip-install schemathesis==<version> into it.
#       Idempotent: does nothing when that version is already installed.
#
#   deploy/schemathesis.sh path
#       Print the path of the installed `schemathesis` executable (exit 1,
#       with a hint, when it is not installed). The test reads it from
#       PROFILES_SCHEMATHESIS, e.g.
#       PROFILES_SCHEMATHESIS=$(deploy/schemathesis.sh path).
#
#   deploy/schemathesis.sh version
#       Print the pinned version.
#
# Environment: SCHEMATHESIS_VERSION (default 4.32.5), PYTHON (default
# python3; needs 3.9+ with the venv module), SCHEMATHESIS_PIP_ARGS (extra pip
# arguments, e.g. --index-url URL).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
PYTHON=${PYTHON:-python3}
VENV=$REPO_ROOT/.cache/schemathesis/$SCHEMATHESIS_VERSION
EXE=$VENV/bin/schemathesis
MARKER=$VENV/.complete

# shellcheck source=deploy/lib.sh
source "$SCRIPT_DIR/lib.sh"

# installed reports whether the pinned version is completely installed: the
# marker is written last, so an interrupted install never looks installed.
installed() {
  [[ -x $EXE && -f $MARKER && $(cat "$MARKER") == "$SCHEMATHESIS_VERSION" ]]
}

cmd_install() {
  if installed; then
    log "schemathesis $SCHEMATHESIS_VERSION already installed in ${VENV#"$REPO_ROOT"/}"
    return 0
  fi
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found on PATH (set PYTHON; needs 3.9+ with venv)"
  log "installing schemathesis $SCHEMATHESIS_VERSION into ${VENV#"$REPO_ROOT"/}"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  # shellcheck disable=SC2086 # SCHEMATHESIS_PIP_ARGS is a list of words
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    ${SCHEMATHESIS_PIP_ARGS:-} "schemathesis==$SCHEMATHESIS_VERSION"
  local got
  got=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("schemathesis"))')
  [[ $got == "$SCHEMATHESIS_VERSION" ]] || die "pip installed schemathesis $got, not $SCHEMATHESIS_VERSION"
  "$EXE" --version >/dev/null || die "$EXE does not run"
  printf '%s\n' "$SCHEMATHESIS_VERSION" >"$MARKER"
  log "installed: $("$EXE" --version)"
}

cmd_path() {
  if ! installed; then
    die "schemathesis $SCHEMATHESIS_VERSION is not installed; run: deploy/schemathesis.sh install"
  fi
  printf '%s\n' "$EXE"
}

main() {
  (( $# > 0 )) || usage
  local cmd=$1
  shift
  case $cmd in
    install) cmd_install ;;
    path) cmd_path ;;
    version) printf '%s\n' "$SCHEMATHESIS_VERSION" ;;
    -h | --help | help) usage ;;
    *) die "unknown command: $cmd (see: $0 --help)" ;;
  esac
}

main "$@"
