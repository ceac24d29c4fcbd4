/*
Copyright 2026 The servicekey-operator Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Command stack benchmarks the operator as users run it: the Helm chart installed on
// a local control plane, and the real servicekey-operator binary started twice as a
// subprocess (controller and token server) with the flags the chart renders for its
// Deployments, each as its chart ServiceAccount. It reports apply-to-Ready latency
// (warm key pool and cold), N ServiceKeys to Ready against key generation alone in
// the same run, heap and RSS per ServiceKey of both components, metrics scrape time,
// token-server start-up time, and revocation latency under load
// (docs/benchmarks.md). Run it with `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/stack"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

type flags struct {
	n, latency, revocations, workers int
	helm, binary                     string
}

func main() {
	var f flags
	flag.IntVar(&f.n, "n", 200, "ServiceKeys created in one burst (the N of N-to-Ready, memory and revocation)")
	flag.IntVar(&f.latency, "latency", 40, "ServiceKeys created one at a time per key size and pool state for apply-to-Ready")
	flag.IntVar(&f.revocations, "revocations", 100, "ServiceKeys deleted one at a time under load for revocation latency (at most N)")
	flag.IntVar(&f.workers, "workers", chartWorkers, "goroutines of the key generation baseline, and the controller's --max-concurrent-reconciles")
	flag.StringVar(&f.helm, "helm", "bin/helm", "helm executable")
	flag.StringVar(&f.binary, "binary", "bin/servicekey-operator", "servicekey-operator executable (make build)")
	flag.Parse()
	if err := run(f); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// bench is the running system and what the phases share.
type bench struct {
	env                       *testenv.Env
	s                         *stack.Stack
	w                         *watcher
	ctrlPprof, tokenPprof     string
	ctrlMetrics, tokenMetrics string
	tokenURL                  string
	baseCtrl, baseToken       memory
	flags                     flags
	created                   atomic.Int64
}

// chartWorkers is the chart's controller.maxConcurrentReconciles.
const chartWorkers = 2

func run(f flags) error {
	log.SetLogger(logr.Discard())
	f.revocations = min(f.revocations, f.n)
	b, stop, err := start(f)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Printf("servicekey-operator benchmark against the real binary: N=%d, %d CPUs, %s\n\n", f.n, runtime.NumCPU(), runtime.Version())
	phases := []func() error{b.latencyWarm, b.burst, b.memoryAtN, b.scrape, b.startup, b.revocation, b.latencyCold}
	for _, phase := range phases {
		if err := phase(); err != nil {
			return err
		}
	}
	return nil
}

// start runs the control plane, installs the chart, starts both components with a
// pprof listener each, and opens the bench's own watch of ServiceKeys.
func start(f flags) (*bench, func(), error) {
	env, err := testenv.StartWithoutCRDs()
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "servicekey-bench-")
	if err != nil {
		_ = env.Stop()
		return nil, nil, err
	}
	cleanup := func() { _ = env.Stop(); _ = os.RemoveAll(dir) }
	ports, err := testenv.FreePorts(6)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	b := &bench{env: env, flags: f, ctrlPprof: ports[4], tokenPprof: ports[5],
		ctrlMetrics: "http://" + ports[1] + "/metrics", tokenMetrics: "http://" + ports[3] + "/metrics"}
	helmLog, err := os.Create(filepath.Join(dir, "helm.log"))
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	defer func() { _ = helmLog.Close() }()
	ctx := context.Background()
	// The per-client rate limit is off: with it, the load of the revocation phase is
	// capped at N × 10 grants/s and measures 429s.
	b.s, err = stack.Install(ctx, stack.Options{Env: env, Helm: f.helm, Binary: f.binary, Dir: dir,
		TokenAddress: ports[0], ControllerMetrics: ports[1], ControllerProbes: ports[2], TokenMetrics: ports[3],
		ControllerArgs:  []string{"--pprof-bind-address=" + b.ctrlPprof},
		TokenServerArgs: []string{"--pprof-bind-address=" + b.tokenPprof},
		Set: []string{"tokenServer.rateLimit=0", fmt.Sprintf("controller.maxConcurrentReconciles=%d", f.workers),
			fmt.Sprintf("controller.keyPool.depth=%d", poolDepth)}, Log: helmLog})
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("%w (helm output: %s)", err, helmLog.Name())
	}
	b.tokenURL = b.s.Issuer + "/oauth2/token"
	if err := b.s.Start(ctx); err != nil {
		cleanup()
		return nil, nil, err
	}
	stopAll := func() { b.s.Stop(); cleanup() }
	if err := b.prepare(ctx); err != nil {
		stopAll()
		return nil, nil, err
	}
	return b, stopAll, nil
}

// prepare creates the bench namespace and a policy permitting default ServiceKeys
// there, reads both components' memory with no ServiceKey, and starts the watch.
func (b *bench) prepare(ctx context.Context) error {
	if err := b.env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return fmt.Errorf("create namespace: %w", err)
	}
	p := &v1.ServiceKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: v1.ServiceKeyPolicySpec{NamespaceSelector: &metav1.LabelSelector{}}}
	if err := b.env.Client.Create(ctx, p); err != nil {
		return fmt.Errorf("create the bench's ServiceKeyPolicy: %w", err)
	}
	var err error
	if b.w, err = watch(ctx, b.env); err != nil {
		return err
	}
	// The baseline includes a full pool, as the measurement at N does.
	for _, bits := range []int32{2048, 4096} {
		if err := b.poolFull(bits); err != nil {
			return err
		}
	}
	if b.baseCtrl, err = b.measure(&b.s.Controller, b.ctrlPprof); err != nil {
		return err
	}
	b.baseToken, err = b.measure(&b.s.TokenServer, b.tokenPprof)
	return err
}
