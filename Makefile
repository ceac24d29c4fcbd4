# servicekey-operator — run `make help` for the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

# Tools, pinned and installed into bin/ (git-ignored) from the Go module proxy.
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
HELM_VERSION ?= v4.3.1
KUSTOMIZE_VERSION ?= v5.8.2
HELM_DOCS_VERSION ?= v1.14.2
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
HELM_DOCS ?= $(LOCALBIN)/helm-docs-$(HELM_DOCS_VERSION)

# Chart directory.
CHART := charts/servicekey-operator
# Files controller-gen, hack/chartgen and helm-docs write (checked by verify-generated).
GENERATED := config/crd/bases config/rbac/controller config/rbac/token-server config/rbac/tenant-edit config/rbac/tenant-view api/v1alpha1/zz_generated.deepcopy.go \
	$(CHART)/templates/crd.yaml $(CHART)/templates/crd-servicekeypolicies.yaml $(CHART)/templates/_rbac-rules.tpl $(CHART)/README.md
# go test flags; e.g. `make test GOTESTFLAGS='-run TestValidation -v'`.
GOTESTFLAGS ?=
# Flags of `make demo`, e.g. DEMO_FLAGS=--exit.
DEMO_FLAGS ?=
# ServiceKeys created by `make bench`.
BENCH_N ?= 200
# How long `make fuzz` runs each fuzz target.
FUZZTIME ?= 20s
# Token requests per concurrency level in `make bench`.
BENCH_TOKENS ?= 10000
# Images `make image` assembles; the tag is the chart's appVersion, so the chart runs them as is.
IMAGE_TAG ?= $(shell awk -F'"' '/^appVersion:/ {print $$2}' $(CHART)/Chart.yaml)
IMAGE ?= ghcr.io/servicekey-operator/servicekey-operator:$(IMAGE_TAG)
EXAMPLES_IMAGE ?= ghcr.io/servicekey-operator/servicekey-examples:$(IMAGE_TAG)

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
		/^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and RBAC (config/, and the chart's copies) from the markers.
	$(CONTROLLER_GEN) crd paths="./api/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=servicekey-operator-controller paths="./controllers/..." output:rbac:artifacts:config=config/rbac/controller
	$(CONTROLLER_GEN) rbac:roleName=servicekey-operator-token-server paths="./tokenserver/..." output:rbac:artifacts:config=config/rbac/token-server
	$(CONTROLLER_GEN) rbac:roleName=servicekey-operator-tenant-edit paths="./api/rbac/edit/..." output:rbac:artifacts:config=config/rbac/tenant-edit
	$(CONTROLLER_GEN) rbac:roleName=servicekey-operator-tenant-view paths="./api/rbac/view/..." output:rbac:artifacts:config=config/rbac/tenant-view
	go run ./hack/chartgen

.PHONY: chart-docs
chart-docs: $(HELM_DOCS) ## Generate the chart's README (values table) from values.yaml comments.
	$(HELM_DOCS) --chart-search-root charts --template-files README.md.gotmpl

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code (api/**/zz_generated.deepcopy.go).
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt on the tree.
	gofmt -s -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (config: .golangci.yml).
	$(GOLANGCI_LINT) run ./...

.PHONY: check-large-files
check-large-files: ## Fail when a tracked file is over 1 MiB (a committed binary); MAX_BYTES overrides.
	hack/check-large-files.sh

.PHONY: verify-generated
verify-generated: manifests generate chart-docs ## Fail when generated files differ from what is committed.
	@git diff --exit-code -- $(GENERATED) || { echo "generated files are stale: run 'make manifests generate' and commit" >&2; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard -- $(GENERATED))" || { git ls-files --others --exclude-standard -- $(GENERATED); echo "untracked generated files: run 'make manifests generate' and commit" >&2; exit 1; }

.PHONY: envtest
envtest: ## Build (once, cached by version) kube-apiserver, etcd and kubectl for tests.
	hack/envtest-build.sh >/dev/null

.PHONY: test
test: manifests generate vet envtest ## Run all tests against a real kube-apiserver and etcd.
	KUBEBUILDER_ASSETS="$$(hack/envtest-build.sh --print)" go test $(GOTESTFLAGS) ./...

.PHONY: test-e2e
test-e2e: envtest build $(HELM) $(KUSTOMIZE) ## Install the chart on a local control plane; run both components as its ServiceAccounts; full flow, least-privilege proof, the docs' recipes, the Python client.
	KUBEBUILDER_ASSETS="$$(hack/envtest-build.sh --print)" E2E_HELM=$(HELM) E2E_KUSTOMIZE=$(KUSTOMIZE) \
		E2E_BINARY=$(LOCALBIN)/servicekey-operator go test -tags e2e -count=1 $(GOTESTFLAGS) ./hack/e2e/

.PHONY: cluster-build
cluster-build: envtest ## Build (once, cached by version) the test cluster's node: kubelet, kube-controller-manager, kube-scheduler, kube-proxy, containerd, CoreDNS, pause.
	hack/cluster-build.sh >/dev/null

.PHONY: test-cluster
test-cluster: cluster-build image $(HELM) ## As root: a one-node cluster from real parts; the chart's pods, a workload mounting its key, rotation, a replica deleted under traffic, docs/quickstart.md as written (docs/testing.md).
	CLUSTER_ASSETS="$$(hack/envtest-build.sh --print)" CLUSTER_NODE="$$(hack/cluster-build.sh --print)" CLUSTER_HELM=$(HELM) \
	  CLUSTER_IMAGES="$(LOCALBIN)/image/servicekey-operator.tar $(LOCALBIN)/image/servicekey-examples.tar" \
	  CLUSTER_IMAGE=$(IMAGE) CLUSTER_EXAMPLES_IMAGE=$(EXAMPLES_IMAGE) \
	  go test -tags cluster -count=1 -timeout 30m -v ./hack/cluster/

.PHONY: demo
demo: envtest build $(HELM) ## The main job: an embedded control plane, the Helm chart, the operator end to end (DEMO_FLAGS=--exit to stop after it).
	KUBEBUILDER_ASSETS="$$(hack/envtest-build.sh --print)" go run ./hack/demo --binary $(LOCALBIN)/servicekey-operator --helm $(HELM) $(DEMO_FLAGS)

.PHONY: fuzz
fuzz: ## Run each native Go fuzz target for FUZZTIME (default 20s); results in docs/security.md.
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

.PHONY: bench
bench: envtest build $(HELM) ## Benchmarks against the real binary (numbers go into docs/benchmarks.md); BENCH_N sets the ServiceKey count.
	KUBEBUILDER_ASSETS="$$(hack/envtest-build.sh --print)" go run ./hack/bench/stack -n $(BENCH_N) -latency 40 \
		-helm $(HELM) -binary $(LOCALBIN)/servicekey-operator
	go run ./hack/bench/token -n $(BENCH_TOKENS)

##@ Build

.PHONY: build
build: generate ## Build bin/servicekey-operator.
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/servicekey-operator .

.PHONY: image
image: generate ## Assemble the images from static binaries without a container engine or a pull: bin/image/{servicekey-operator,servicekey-examples}.tar.
	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o $(LOCALBIN)/linux/servicekey-operator .
	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o $(LOCALBIN)/linux/ ./examples/client ./examples/resource-server
	go run ./hack/image --tag $(IMAGE) --out $(LOCALBIN)/image/servicekey-operator.tar --entrypoint /servicekey-operator \
	  --file /servicekey-operator=$(LOCALBIN)/linux/servicekey-operator --file /etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt
	go run ./hack/image --tag $(EXAMPLES_IMAGE) --out $(LOCALBIN)/image/servicekey-examples.tar \
	  --file /client=$(LOCALBIN)/linux/client --file /resource-server=$(LOCALBIN)/linux/resource-server \
	  --file /etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt

.PHONY: run
run: manifests generate ## Run the controller against the cluster of the current kubeconfig.
	go run . controller

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

$(CONTROLLER_GEN): | $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

$(GOLANGCI_LINT): | $(LOCALBIN)
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

$(HELM): | $(LOCALBIN)
	$(call go-install-tool,$(HELM),helm.sh/helm/v4/cmd/helm,$(HELM_VERSION))

$(HELM_DOCS): | $(LOCALBIN)
	$(call go-install-tool,$(HELM_DOCS),github.com/norwoodj/helm-docs/cmd/helm-docs,$(HELM_DOCS_VERSION))

$(KUSTOMIZE): | $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION),kustomize)

.PHONY: tools
tools: $(CONTROLLER_GEN) $(GOLANGCI_LINT) $(HELM) $(KUSTOMIZE) $(HELM_DOCS) ## Install the pinned tools into bin/.

# go-install-tool installs package $(2) at version $(3) as $(1) (versioned file name, so
# bumping a version in this file reinstalls it); $(4) names the built binary when it is
# not the package's last path element (a /vN module suffix).
define go-install-tool
@echo "installing $(2)@$(3) into $(LOCALBIN)"
GOBIN=$(LOCALBIN) hack/with-progress.sh "$(notdir $(1))" go install $(2)@$(3)
mv $(LOCALBIN)/$(or $(4),$$(basename $(2))) $(1)
endef
