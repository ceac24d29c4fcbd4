#!/usr/bin/env bash
# with-progress.sh LABEL COMMAND...: run COMMAND, printing "LABEL: still working (Ns)"
# to stderr every 30 s, so first-run builds (kube-apiserver, helm) never look hung.
# Exits with COMMAND's status.
set -uo pipefail
label=$1
shift
"$@" &
pid=$!
start=$SECONDS
(
  while sleep 30; do
    kill -0 "$pid" 2>/dev/null || exit 0
    printf '%s: still working (%ds)\n' "$label" "$((SECONDS - start))" >&2
  done
) &
ticker=$!
wait "$pid"
status=$?
kill "$ticker" 2>/dev/null
wait "$ticker" 2>/dev/null
exit "$status"
