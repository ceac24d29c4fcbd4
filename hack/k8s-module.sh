# Sourced by hack/envtest-build.sh and hack/cluster-build.sh: how to build commands of
# k8s.io/kubernetes from the Go module proxy.
#
# k8s_module DIR NAME K8S_VERSION PKG...: writes DIR/go.mod requiring k8s.io/kubernetes
# at K8S_VERSION with every staging module (k8s.io/api, k8s.io/client-go, ...)
# replaced by its published v0.X.Y module — kubernetes' own go.mod points them at
# ./staging, which does not exist when it is used as a dependency — and a tools.go
# importing PKG..., then resolves the module graph.
k8s_module() {
  local dir=$1 name=$2 version=$3 mod
  shift 3
  mod=$(go mod download -json "k8s.io/kubernetes@$version" | awk -F'"' '$2 == "GoMod" {print $4}') || return 1
  mkdir -p "$dir"
  {
    echo "module $name"
    echo
    awk '$1 == "go" {print; exit}' "$mod"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    awk -v v="v0.${version#v1.}" '$2 == "=>" && $3 ~ /^\.\/staging\// {print "\t" $1 " => " $1 " " v}' "$mod"
    echo ")"
  } >"$dir/go.mod"
  {
    echo "package tools"
    echo
    echo "import ("
    for p in "$@"; do echo "	_ \"$p\""; done
    echo ")"
  } >"$dir/tools.go"
  (cd "$dir" && go mod tidy >"$dir/tidy.log" 2>&1) || { cat "$dir/tidy.log" >&2; return 1; }
}

# k8s_ldflags K8S_VERSION: the linker flags that stamp the version the binaries report
# (the kubelet registers it as the node's version).
k8s_ldflags() {
  local version=$1 minor ld="-s -w"
  minor=$(echo "$version" | cut -d. -f2)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  echo "$ld"
}
