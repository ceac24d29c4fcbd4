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

// Command controller measures how long the ServiceKey controller takes to make N
// ServiceKeys Ready on a local control plane, next to the time of generating N RSA
// keys alone with the same parallelism in the same run. The ratio is the controller's
// overhead over the unavoidable cost (docs/benchmarks.md). Run it with `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/controllers"
	"github.com/servicekey-operator/servicekey-operator/hack/bench/procstat"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

func main() {
	n := flag.Int("n", 200, "number of ServiceKeys")
	workers := flag.Int("workers", runtime.NumCPU(), "MaxConcurrentReconciles, and goroutines of the key generation baseline")
	bits := flag.Int("bits", 2048, "RSA key size")
	latency := flag.Int("latency", 0, "instead: measure create-to-Ready of this many ServiceKeys one at a time, warm pool and cold, then a burst of -n")
	flag.Parse()
	var err error
	if *latency > 0 {
		err = runLatency(*latency, *n, *workers, int32(*bits))
	} else {
		err = run(*n, *workers, int32(*bits))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(n, workers int, bits int32) error {
	log.SetLogger(logr.Discard())
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cache, err := startController(ctx, env, workers, controllers.RSAKeys{})
	if err != nil {
		return err
	}
	if err := allowAll(ctx, env.Client); err != nil {
		return err
	}
	fmt.Printf("servicekey controller benchmark: N=%d, %d-bit keys, %d workers, %d CPUs, %s\n",
		n, bits, workers, runtime.NumCPU(), runtime.Version())

	// Key generation alone, before and after the controller phase: the machine's
	// speed drifts (steal time on a shared host), the mean of both is the bound.
	steal0 := procstat.StealSeconds()
	genBefore, err := timeKeygen(n, workers, bits)
	if err != nil {
		return err
	}
	steal1 := procstat.StealSeconds()
	before := procstat.CPUTimes()
	ctrlTime, err := timeReady(ctx, env.Client, cache, n, bits)
	if err != nil {
		return err
	}
	after := procstat.CPUTimes()
	steal2 := procstat.StealSeconds()
	genAfter, err := timeKeygen(n, workers, bits)
	if err != nil {
		return err
	}
	steal3 := procstat.StealSeconds()
	genTime := (genBefore + genAfter) / 2
	fmt.Printf("| phase | wall time | keys/s | CPU stolen by the host |\n|---|---|---|---|\n")
	fmt.Printf("| %d RSA keys generated alone, before (%d goroutines) | %v | %.1f | %.1fs |\n", n, workers, genBefore.Round(time.Millisecond), float64(n)/genBefore.Seconds(), steal1-steal0)
	fmt.Printf("| %d ServiceKeys created → all Ready | %v | %.1f | %.1fs |\n", n, ctrlTime.Round(time.Millisecond), float64(n)/ctrlTime.Seconds(), steal2-steal1)
	fmt.Printf("| %d RSA keys generated alone, after (%d goroutines) | %v | %.1f | %.1fs |\n", n, workers, genAfter.Round(time.Millisecond), float64(n)/genAfter.Seconds(), steal3-steal2)
	cores := float64(runtime.NumCPU())
	avail := func(wall time.Duration, stolen float64) float64 { return cores*wall.Seconds() - stolen }
	genAvail := (avail(genBefore, steal1-steal0) + avail(genAfter, steal3-steal2)) / 2
	fmt.Printf("\nratio controller / mean key generation, wall time: %.2f (target ≤ 1.5)\n", ctrlTime.Seconds()/genTime.Seconds())
	fmt.Printf("ratio in CPU seconds the machine actually had (cores × wall − stolen): %.2f\n",
		avail(ctrlTime, steal2-steal1)/genAvail)
	fmt.Printf("\nCPU seconds while the controller worked: this process (controller + bench client) %.1f, kube-apiserver %.1f, etcd %.1f\n",
		after["self"]-before["self"], after["kube-apiserver"]-before["kube-apiserver"], after["etcd"]-before["etcd"])
	return nil
}

func startController(ctx context.Context, env *testenv.Env, workers int, keys controllers.KeyGenerator) (client.Reader, error) {
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Cache: controllers.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"},
		// -latency starts a second manager after the first: same controller names.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, err
	}
	r := &controllers.ServiceKeyReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorder("servicekey-operator"), Clock: clock.RealClock{},
		Keys: keys, Config: controllers.Config{TokenURI: "https://token.bench/oauth2/token"},
	}
	if err := r.SetupWithManager(mgr, workers); err != nil {
		return nil, err
	}
	if pool, ok := keys.(*controllers.KeyPool); ok {
		if err := mgr.Add(pool); err != nil {
			return nil, err
		}
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("cache did not sync")
	}
	return mgr.GetCache(), nil
}

// allowAll creates a ServiceKeyPolicy that permits default ServiceKeys in every
// namespace: without one, every key is refused by policy and never Ready.
func allowAll(ctx context.Context, c client.Client) error {
	p := &v1.ServiceKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: v1.ServiceKeyPolicySpec{NamespaceSelector: &metav1.LabelSelector{}}}
	if err := c.Create(ctx, p); err != nil {
		return fmt.Errorf("create the bench's ServiceKeyPolicy: %w", err)
	}
	return nil
}

// timeReady creates n ServiceKeys (4 goroutines) and returns the time from the first
// create until the cache shows all of them Ready.
func timeReady(ctx context.Context, c client.Client, cache client.Reader, n int, bits int32) (time.Duration, error) {
	const ns = "bench"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return 0, err
	}
	start := time.Now()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; i < n; i += 4 {
				sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("key-%04d", i), Namespace: ns}}
				sk.Spec.PrivateKey.Size = bits
				if err := c.Create(ctx, sk); err != nil {
					errs <- err
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, fmt.Errorf("create ServiceKey: %w", err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		var list v1.ServiceKeyList
		if err := cache.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return 0, err
		}
		ready := 0
		for i := range list.Items {
			if meta.IsStatusConditionTrue(list.Items[i].Status.Conditions, v1.ConditionReady) {
				ready++
			}
		}
		if ready == n {
			return time.Since(start), nil
		}
		time.Sleep(10 * time.Millisecond) // polling the in-memory cache
	}
	return 0, fmt.Errorf("not all %d ServiceKeys Ready within 10 minutes", n)
}

// timeKeygen generates n keys with the controller's generator on workers goroutines.
func timeKeygen(n, workers int, bits int32) (time.Duration, error) {
	jobs := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if _, err := (controllers.RSAKeys{}).New(bits, v1.PKCS1); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), firstErr
}
