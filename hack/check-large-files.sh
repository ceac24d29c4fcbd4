#!/usr/bin/env bash
# Fails when a file tracked by git (git ls-files) is larger than MAX_BYTES (default
# 1 MiB). Binaries built at the root (go build ., go build ./hack/demo) have been
# committed by mistake before; a repository keeps every version of such a file
# forever, so CI refuses them before they land. Sizes are those in the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
max=${MAX_BYTES:-1048576}
found=0
while IFS= read -r -d '' f; do
  [[ -f $f && ! -L $f ]] || continue # deleted in the working tree, or a symlink
  size=$(wc -c <"$f")
  size=${size//[[:space:]]/}
  if ((size > max)); then
    printf '%s: %d bytes (limit %d)\n' "$f" "$size" "$max" >&2
    found=1
  fi
done < <(git ls-files -z)
if ((found)); then
  echo "tracked files over the limit: remove them (git rm --cached FILE) and list build outputs in .gitignore" >&2
  exit 1
fi
echo "no tracked file is over $max bytes"
