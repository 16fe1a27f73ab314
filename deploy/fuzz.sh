#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the repository briefly, one after the
# other, and prints one line per target. It exits non-zero if any target
# fails (a crasher, or a package that does not build).
#
# It finds the targets itself: in every module (each directory of the repo
# root with a go.mod), `go test -list '^Fuzz' ./...` with GOWORK=off, as CI
# builds the modules. Each target then runs alone:
#
#   go test -run '^$' -fuzz "^${name}\$" -fuzztime "${FUZZTIME:-5s}" <pkg>
#
# Longer runs:
#   FUZZTIME=10m deploy/fuzz.sh          # every target, 10 minutes each
#   FUZZTIME=100000x deploy/fuzz.sh      # every target, 100000 inputs each
#   cd events && go test -run '^$' -fuzz '^FuzzUpcast$' -fuzztime 30m .
#                                        # one target by hand
#
# A run that fails only with the fuzz engine's bare "context deadline
# exceeded" at the -fuzztime boundary (go.dev/issue/75804) and writes no
# input is run once more; if it does that again it is reported as FLAKE and
# does not fail the script. Every other failure does.
#
# A failing input is written to testdata/fuzz/<Name>/<hash> in the package
# of the target (e.g. events/testdata/fuzz/FuzzUpcast/), and this script
# prints that path. Plain `go test` replays every file there as a seed, so
# once the bug is fixed, commit the file as a regression test. Replay one
# with `go test -run '^FuzzUpcast/<hash>$' .` in the package. The corpus the
# fuzzer grows while it runs (the interesting inputs, not failures) stays in
# $(go env GOCACHE)/fuzz and is reused by the next run on this machine.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzztime="${FUZZTIME:-5s}"
export GOWORK=off

logdir="$(mktemp -d)"
trap 'rm -rf "$logdir"' EXIT

# targets prints "<module dir> <package> <target>" for every fuzz target.
targets() {
	local gomod mod out line pending=()
	for gomod in "$root"/*/go.mod; do
		mod="$(dirname "$gomod")"
		if ! out="$(cd "$mod" && go test -list '^Fuzz' ./... 2>&1)"; then
			echo "fuzz.sh: listing the fuzz targets of ${mod#"$root"/} failed:" >&2
			echo "$out" >&2
			return 1
		fi
		# go test -list prints a package's names, then "ok  <pkg>  <time>".
		while IFS= read -r line; do
			case "$line" in
			Fuzz*) pending+=("$line") ;;
			ok*)
				local pkg name
				pkg="$(awk '{print $2}' <<<"$line")"
				for name in ${pending[@]+"${pending[@]}"}; do
					echo "$mod $pkg $name"
				done
				pending=()
				;;
			*) ;; # e.g. "?  <pkg>  [no test files]"
			esac
		done <<<"$out"
	done
}

list="$(targets)"
if [[ -z "$list" ]]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

# deadline_flake says whether a failed run's log is only the fuzz engine's
# own race at the -fuzztime boundary (go.dev/issue/75804, fixed in Go 1.27):
# the target reports a bare "context deadline exceeded", no input was
# written, nothing panicked and no test helper reported an error. A real
# finding always writes its input to testdata/fuzz and says so.
deadline_flake() {
	local log="$1"
	grep -q '^    context deadline exceeded$' "$log" || return 1
	! grep -qE 'Failing input written|failing input|panic:|fuzzing process hung|_test\.go:[0-9]+:' "$log"
}

failed=0
flaked=0
total=0
while read -r mod pkg name; do
	total=$((total + 1))
	log="$logdir/$total.log"
	start=$SECONDS
	run() { (cd "$mod" && go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg") >"$log" 2>&1; }
	ok=0
	if run; then
		ok=1
	elif deadline_flake "$log"; then
		# Run it once more: a second bare deadline is still the engine's
		# race, reported as such; anything else counts as it is.
		echo "      $name: the fuzz engine's deadline race (go.dev/issue/75804), running it again"
		if run; then
			ok=1
		elif deadline_flake "$log"; then
			ok=2
		fi
	fi
	case $ok in
	1) printf 'ok    %-45s %-22s %3ds\n' "$pkg" "$name" $((SECONDS - start)) ;;
	2)
		flaked=$((flaked + 1))
		printf 'FLAKE %-45s %-22s %3ds  (twice the engine deadline race, no failing input)\n' "$pkg" "$name" $((SECONDS - start))
		;;
	*)
		failed=$((failed + 1))
		printf 'FAIL  %-45s %-22s %3ds\n' "$pkg" "$name" $((SECONDS - start))
		dir="$(cd "$mod" && go list -f '{{.Dir}}' "$pkg")"
		if crasher="$(grep -o 'testdata/fuzz/[^ ]*' "$log" | tail -n 1)" && [[ -n "$crasher" ]]; then
			echo "      failing input: ${dir#"$root"/}/$crasher"
		fi
		sed -e 's/^/      | /' "$log" | tail -n 30
		;;
	esac
done <<<"$list"

echo "fuzz.sh: $((total - failed - flaked))/$total targets passed, $flaked hit only the engine's deadline race (FUZZTIME=$fuzztime)"
[[ $failed -eq 0 ]]
