#!/usr/bin/env bash
# Builds the node of the one-node test cluster (make test-cluster) from the Go module
# proxy and caches it by version outside the repository, like hack/envtest-build.sh
# (which it runs first for etcd and kube-apiserver):
#   * kube-controller-manager, kube-scheduler, kubelet and kube-proxy from
#     k8s.io/kubernetes at the same release as kube-apiserver;
#   * containerd, containerd-shim-runc-v2 and ctr from github.com/containerd/containerd/v2
#     (the kubelet of this release needs containerd 2: Debian 12 has 1.6);
#   * coredns, the cluster DNS, from github.com/coredns/coredns with only the plugins
#     the cluster's Corefile uses (the full plugin set pulls every cloud provider's SDK);
#   * pause, the pod sandbox's process, compiled statically from the pause.c in the
#     k8s.io/kubernetes module, and pause.tar, its image (hack/image): no image is
#     pulled from a registry.
# runc, the CNI plugins and iptables come from Debian (.ci/run installs them).
#
# Usage: hack/cluster-build.sh          builds if needed, prints the node dir
#        hack/cluster-build.sh --print  prints the node dir only (no build)
# Env:   CLUSTER_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/servicekey-operator/cluster)
#        CONTAINERD_VERSION, COREDNS_VERSION (defaults below).
set -euo pipefail

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/k8s-module.sh
source "$root/hack/k8s-module.sh"
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.2.9}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}

assets_dir=$("$root/hack/envtest-build.sh" --print)
k8s_version=$(basename "$assets_dir" | sed -E 's/^k8s-(v[^-]+)-etcd-.*/\1/')
[[ "$k8s_version" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || die "cannot read the Kubernetes version from $assets_dir"
cache=${CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/servicekey-operator/cluster}
node="$cache/node-k8s-$k8s_version-containerd-$CONTAINERD_VERSION"
if [[ "${1:-}" == "--print" ]]; then echo "$node"; exit 0; fi

"$root/hack/envtest-build.sh" >/dev/null
k8s_cmds=(kube-controller-manager kube-scheduler kubelet kube-proxy)
ctr_cmds=(containerd containerd-shim-runc-v2 ctr)
# The CoreDNS plugins built in, in the order they handle a query (CoreDNS's own order).
coredns_plugins=(bind ready errors cache template kubernetes)
# coredns_built: the cached coredns is the wanted release (coredns -version prints
# "CoreDNS-1.15.0"), so changing COREDNS_VERSION rebuilds it in the same node directory.
coredns_built() {
  [[ -x "$node/coredns" ]] && "$node/coredns" -version 2>/dev/null | grep -qxF "CoreDNS-${COREDNS_VERSION#v}"
}

complete() {
  for f in "${k8s_cmds[@]}" "${ctr_cmds[@]}" pause pause.tar; do [[ -e "$node/$f" ]] || return 1; done
  coredns_built
}
if complete; then
  log "cached: Kubernetes $k8s_version node binaries, containerd $CONTAINERD_VERSION, CoreDNS $COREDNS_VERSION in $node"
  echo "$node"
  exit 0
fi
mkdir -p "$node" "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS

build_kubernetes() {
  local pkgs=() out=() c
  for c in "${k8s_cmds[@]}"; do [[ -x "$node/$c" ]] || { pkgs+=("k8s.io/kubernetes/cmd/$c"); out+=("$c"); }; done
  [[ ${#pkgs[@]} -gt 0 ]] || return 0
  log "building ${out[*]} $k8s_version (first run: 5-15 minutes on 2 cores)"
  (cd "$cache" && k8s_module "$work/k8s" cluster/node "$k8s_version" "${pkgs[@]}") ||
    die "resolving k8s.io/kubernetes@$k8s_version failed (module proxy reachable?)"
  (cd "$work/k8s" && CGO_ENABLED=0 "$root/hack/with-progress.sh" "[cluster] kubernetes" \
    go build -trimpath -ldflags="$(k8s_ldflags "$k8s_version")" -o "$work/k8s/bin/" "${pkgs[@]}") ||
    die "building ${out[*]} failed"
  for c in "${out[@]}"; do mv "$work/k8s/bin/$c" "$node/$c"; done
}

build_containerd() {
  local c missing=0
  for c in "${ctr_cmds[@]}"; do [[ -x "$node/$c" ]] || missing=1; done
  [[ $missing == 1 ]] || return 0
  log "building containerd $CONTAINERD_VERSION (first run: 1-3 minutes)"
  local d="$work/containerd"
  mkdir -p "$d"
  printf 'module cluster/containerd\n\ngo 1.24\n\nrequire github.com/containerd/containerd/v2 %s\n' "$CONTAINERD_VERSION" >"$d/go.mod"
  {
    echo "package tools"
    echo
    echo "import ("
    for c in "${ctr_cmds[@]}"; do echo "	_ \"github.com/containerd/containerd/v2/cmd/$c\""; done
    echo ")"
  } >"$d/tools.go"
  (cd "$d" && go mod tidy >"$d/tidy.log" 2>&1) || { cat "$d/tidy.log" >&2; die "resolving containerd $CONTAINERD_VERSION failed"; }
  local pkgs=()
  for c in "${ctr_cmds[@]}"; do pkgs+=("github.com/containerd/containerd/v2/cmd/$c"); done
  # Without cgo: no btrfs snapshotter (overlayfs is used), everything else as released.
  (cd "$d" && CGO_ENABLED=0 "$root/hack/with-progress.sh" "[cluster] containerd" \
    go build -trimpath -ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" -o "$d/bin/" "${pkgs[@]}") ||
    die "building containerd failed"
  for c in "${ctr_cmds[@]}"; do mv "$d/bin/$c" "$node/$c"; done
}

# build_coredns builds CoreDNS from a main.go that registers coredns_plugins only:
# the binary carries none of the other plugins (core/plugin would link them all in).
build_coredns() {
  coredns_built && return 0
  log "building CoreDNS $COREDNS_VERSION (first run: 1-3 minutes)"
  local d="$work/coredns" p imports="" directives=""
  for p in "${coredns_plugins[@]}"; do
    imports+=$'\t_ "github.com/coredns/coredns/plugin/'"$p"$'"\n'
    directives+="${directives:+, }\"$p\""
  done
  mkdir -p "$d"
  printf 'module cluster/coredns\n\ngo 1.26.0\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >"$d/go.mod"
  cat >"$d/main.go" <<GO
// Command coredns is CoreDNS with the plugins of the test cluster's Corefile only.
package main

import (
	"fmt"
	"os"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
${imports})

func main() {
	if err := dnsserver.SetDirectives([]string{${directives}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	coremain.Run()
}
GO
  (cd "$d" && go mod tidy >"$d/tidy.log" 2>&1) ||
    { cat "$d/tidy.log" >&2; die "resolving CoreDNS $COREDNS_VERSION failed (module proxy reachable? Go new enough?)"; }
  (cd "$d" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$root/hack/with-progress.sh" "[cluster] coredns" \
    go build -trimpath -ldflags="-s -w" -o "$d/coredns" .) ||
    die "building CoreDNS failed"
  mv "$d/coredns" "$node/coredns"
}

build_pause() {
  [[ -x "$node/pause" && -f "$node/pause.tar" ]] && return 0
  command -v gcc >/dev/null || die "gcc is needed to build pause (apt-get install gcc libc6-dev)"
  local mod src
  mod=$(cd "$cache" && go mod download -json "k8s.io/kubernetes@$k8s_version" | awk -F'"' '$2 == "Dir" {print $4}')
  src="$mod/build/pause/linux/pause.c"
  [[ -f "$src" ]] || die "$src not found"
  log "building pause from $src"
  gcc -Os -Wall -Werror -static -DVERSION="$k8s_version" -o "$node/pause.tmp" "$src" || die "compiling pause failed"
  strip "$node/pause.tmp" 2>/dev/null || true
  mv "$node/pause.tmp" "$node/pause"
  # 65535 is the pause image's user upstream.
  (cd "$root" && go run ./hack/image --tag localhost/servicekey-test/pause:3.10 --out "$node/pause.tar.tmp" \
    --user 65535:65535 --entrypoint /pause --file "/pause=$node/pause" >/dev/null) || die "assembling the pause image failed"
  mv "$node/pause.tar.tmp" "$node/pause.tar"
}

build_kubernetes
build_containerd
build_coredns
build_pause
log "done in $((SECONDS - start))s: $node"
echo "$node"
