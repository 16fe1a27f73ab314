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

failed=0
total=0
while read -r mod pkg name; do
	total=$((total + 1))
	log="$logdir/$total.log"
	start=$SECONDS
	if (cd "$mod" && go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg") >"$log" 2>&1; then
		printf 'ok    %-45s %-22s %3ds\n' "$pkg" "$name" $((SECONDS - start))
	else
		failed=$((failed + 1))
		printf 'FAIL  %-45s %-22s %3ds\n' "$pkg" "$name" $((SECONDS - start))
		dir="$(cd "$mod" && go list -f '{{.Dir}}' "$pkg")"
		if crasher="$(grep -o 'testdata/fuzz/[^ ]*' "$log" | tail -n 1)" && [[ -n "$crasher" ]]; then
			echo "      failing input: ${dir#"$root"/}/$crasher"
		fi
		sed -e 's/^/      | /' "$log" | tail -n 30
	fi
done <<<"$list"

echo "fuzz.sh: $((total - failed))/$total targets passed (FUZZTIME=$fuzztime)"
[[ $failed -eq 0 ]]
