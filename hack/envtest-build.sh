#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver and etcd) and kubectl, as
# setup-envtest ships them, from the Go module proxy and caches them by version
# outside the repository.
#
# Prebuilt envtest binaries cannot be downloaded on our machines, so we compile
# them:
#   * kube-apiserver and kubectl from k8s.io/kubernetes at the release matching the
#     k8s.io/apimachinery version in go.mod (v0.X.Y -> v1.X.Y), with every
#     staging module (k8s.io/api, k8s.io/client-go, ...) replaced by its
#     published v0.X.Y module, because kubernetes' own go.mod points them at
#     ./staging, which does not exist when it is used as a dependency;
#   * etcd from go.etcd.io/etcd/server/v3 at the version kubernetes' go.mod
#     requires, through a two-line main calling etcdmain.Main.
#
# Usage: hack/envtest-build.sh          builds if needed, prints the assets dir
#        hack/envtest-build.sh --print  prints the assets dir only (no build)
# Env:   ENVTEST_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/servicekey-operator/envtest)
#        K8S_VERSION, ETCD_VERSION to override the derived versions.
set -euo pipefail

log() { printf '[envtest] %s\n' "$*" >&2; }
die() { printf '[envtest] ERROR: %s\n' "$*" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/k8s-module.sh
source "$root/hack/k8s-module.sh"
command -v go >/dev/null || die "go is not on PATH"

if [[ -z "${K8S_VERSION:-}" ]]; then
  apim=$(awk '$1 == "k8s.io/apimachinery" {print $2; exit}' "$root/go.mod")
  [[ "$apim" =~ ^v0\.([0-9]+)\.([0-9]+)$ ]] ||
    die "cannot derive the Kubernetes version from k8s.io/apimachinery '$apim' in go.mod"
  K8S_VERSION="v1.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
fi
staging_version="v0.${K8S_VERSION#v1.}"

cache=${ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/servicekey-operator/envtest}
mkdir -p "$cache"

# The kubernetes go.mod names the etcd it is tested with; take the same one.
if [[ -z "${ETCD_VERSION:-}" ]]; then
  k8smod=$(cd "$cache" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    awk -F'"' '$2 == "GoMod" {print $4}') || die "cannot download k8s.io/kubernetes@$K8S_VERSION"
  ETCD_VERSION=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$k8smod")
  [[ -n "$ETCD_VERSION" ]] || die "k8s.io/kubernetes@$K8S_VERSION does not name go.etcd.io/etcd/server/v3"
fi

assets="$cache/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
if [[ "${1:-}" == "--print" ]]; then echo "$assets"; exit 0; fi
if [[ -x "$assets/kube-apiserver" && -x "$assets/kubectl" && -x "$assets/etcd" ]]; then
  log "cached: kube-apiserver and kubectl $K8S_VERSION, etcd $ETCD_VERSION in $assets"
  echo "$assets"
  exit 0
fi
mkdir -p "$assets"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

build_etcd() {
  [[ -x "$assets/etcd" ]] && return 0
  log "building etcd $ETCD_VERSION (first run: a few minutes)"
  local d="$work/etcd"
  mkdir -p "$d"
  cat >"$d/main.go" <<'EOF'
// Command etcd is etcd's server main, built from the Go module proxy for envtest.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (cd "$d" && go mod init envtest/etcd >/dev/null 2>&1 &&
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 &&
    go mod tidy >/dev/null 2>&1) || die "resolving go.etcd.io/etcd/server/v3@$ETCD_VERSION failed (module proxy reachable?)"
  (cd "$d" && CGO_ENABLED=0 "$root/hack/with-progress.sh" "[envtest] etcd" go build -trimpath -ldflags='-s -w' -o "$assets/etcd.tmp" .) ||
    die "building etcd failed"
  mv "$assets/etcd.tmp" "$assets/etcd"
  log "etcd ready"
}

build_k8s() {
  local pkgs=() out=() c
  for c in kube-apiserver kubectl; do [[ -x "$assets/$c" ]] || { pkgs+=("k8s.io/kubernetes/cmd/$c"); out+=("$c"); }; done
  [[ ${#pkgs[@]} -gt 0 ]] || return 0
  log "building ${out[*]} $K8S_VERSION (first run: 5-15 minutes on 2 cores)"
  local d="$work/k8s"
  (cd "$cache" && k8s_module "$d" envtest/k8s "$K8S_VERSION" "${pkgs[@]}") ||
    die "resolving k8s.io/kubernetes@$K8S_VERSION with staging modules at $staging_version failed"
  (cd "$d" && CGO_ENABLED=0 "$root/hack/with-progress.sh" "[envtest] ${out[*]}" go build -trimpath -ldflags="$(k8s_ldflags "$K8S_VERSION")" -o "$d/bin/" "${pkgs[@]}") ||
    die "building ${out[*]} failed"
  for c in "${out[@]}"; do mv "$d/bin/$c" "$assets/$c"; done
  log "${out[*]} ready"
}

start=$SECONDS
build_etcd
build_k8s
log "done in $((SECONDS - start))s: $assets"
echo "$assets"
