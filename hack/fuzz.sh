#!/usr/bin/env bash
# Runs every native Go fuzz target for FUZZTIME (default 20s) and prints one summary
# line each: executions, executions per second, corpus entries found. A crash fails
# the run; go test saves the input under the package's testdata/fuzz/<target>/, where
# plain `go test` replays it from then on (commit it with the fix).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-20s}
targets=(
  ./tokenserver:FuzzTokenEndpoint
  ./tokenserver:FuzzAssertion
  ./tokenserver:FuzzIntrospection
  ./verifier:FuzzVerifier
  ./api/keyutil:FuzzKeyFile
)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
for t in "${targets[@]}"; do
  pkg=${t%%:*} name=${t##*:}
  echo "== $name ($pkg, $fuzztime)"
  if ! go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 100x >"$log" 2>&1; then
    cat "$log"
    echo "fuzz: $name failed; the input is under $pkg/testdata/fuzz/$name" >&2
    exit 1
  fi
  last=$(grep '^fuzz: elapsed' "$log" | tail -1 || true)
  last=${last:-"(no progress line: $(tail -1 "$log"))"}
  echo "$last"
  summary+=("$name: $last")
done
echo
echo "Fuzzing summary ($(go env GOVERSION), $(nproc) cores, $fuzztime each):"
printf '  %s\n' "${summary[@]}"
