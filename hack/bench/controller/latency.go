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

package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/controllers"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

const poolDepth = 4

// runLatency measures create-to-Ready of one ServiceKey at a time (the next created
// once the previous is Ready and, warm, once the pool is full again), with the warm
// pool and without it, then a burst of burst creations with the pool warm.
func runLatency(n, burst, workers int, bits int32) error {
	log.SetLogger(logr.Discard())
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	if err := allowAll(context.Background(), env.Client); err != nil {
		return err
	}
	fmt.Printf("apply-to-Ready, %d-bit keys, %d workers, %d CPUs, %s, in-process controller\n", bits, workers, runtime.NumCPU(), runtime.Version())
	fmt.Printf("| pool | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n")
	for _, warm := range []bool{true, false} {
		depth := 0
		if warm {
			depth = poolDepth
		}
		pool := controllers.NewKeyPool(controllers.RSAKeys{}, []int32{bits}, depth, logr.Discard())
		ctx, cancel := context.WithCancel(context.Background())
		cache, err := startController(ctx, env, workers, pool)
		if err != nil {
			cancel()
			return err
		}
		ns := fmt.Sprintf("latency-%v", warm)
		lat, err := sequential(ctx, env.Client, cache, pool, ns, n, bits, depth)
		if err == nil && warm {
			fmt.Print(row(fmt.Sprintf("warm (depth %d)", depth), lat))
			err = burstCurve(ctx, env.Client, cache, pool, burst, bits, depth)
		} else if err == nil {
			fmt.Print(row("cold (depth 0)", lat))
		}
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

func row(name string, lat []time.Duration) string {
	slices.Sort(lat)
	q := func(p float64) time.Duration {
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(time.Millisecond)
	}
	return fmt.Sprintf("| %s | %d | %v | %v | %v | %v |\n", name, len(lat), q(0.5), q(0.9), q(0.99), lat[len(lat)-1].Round(time.Millisecond))
}

// sequential creates n ServiceKeys one after the other and returns each one's time
// from the create call until the controller's cache shows it Ready.
func sequential(ctx context.Context, c client.Client, cache client.Reader, pool *controllers.KeyPool, ns string, n int, bits int32, depth int) ([]time.Duration, error) {
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return nil, err
	}
	var lat []time.Duration
	for i := range n {
		if err := testenv.Poll("the pool to refill", 5*time.Minute, func() (bool, string) { return pool.Len(bits) >= depth, "" }); err != nil {
			return nil, err
		}
		sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("k-%04d", i), Namespace: ns}}
		sk.Spec.PrivateKey.Size = bits
		start := time.Now()
		if err := c.Create(ctx, sk); err != nil {
			return nil, err
		}
		for {
			got := &v1.ServiceKey{}
			if err := cache.Get(ctx, client.ObjectKeyFromObject(sk), got); err == nil &&
				meta.IsStatusConditionTrue(got.Status.Conditions, v1.ConditionReady) {
				break
			}
			if time.Since(start) > 5*time.Minute {
				return nil, fmt.Errorf("%s not Ready in 5 minutes", sk.Name)
			}
			time.Sleep(time.Millisecond) // polling the in-memory, watch-fed cache
		}
		lat = append(lat, time.Since(start))
	}
	return lat, nil
}

// burstCurve creates burst ServiceKeys at once with the pool full and prints how long
// after the first create the k-th ServiceKey became Ready, for a few k: the pool's
// keys first, then mostly generation on demand.
func burstCurve(ctx context.Context, c client.Client, cache client.Reader, pool *controllers.KeyPool, burst int, bits int32, depth int) error {
	const ns = "burst"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	if err := testenv.Poll("the pool to refill", 5*time.Minute, func() (bool, string) { return pool.Len(bits) >= depth, "" }); err != nil {
		return err
	}
	start := time.Now()
	created := make(chan error, 1)
	go func() {
		for i := range burst {
			sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("b-%04d", i), Namespace: ns}}
			sk.Spec.PrivateKey.Size = bits
			if err := c.Create(ctx, sk); err != nil {
				created <- err
				return
			}
		}
		created <- nil
	}()
	readyAt := map[string]time.Duration{}
	var createTime time.Duration
	for len(readyAt) < burst {
		select {
		case err := <-created:
			if err != nil {
				return err
			}
			createTime = time.Since(start)
		default:
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("burst: %d of %d Ready after 10 minutes", len(readyAt), burst)
		}
		var list v1.ServiceKeyList
		if err := cache.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for i := range list.Items {
			sk := &list.Items[i]
			if _, ok := readyAt[sk.Name]; !ok && meta.IsStatusConditionTrue(sk.Status.Conditions, v1.ConditionReady) {
				readyAt[sk.Name] = time.Since(start)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	var times []time.Duration
	for _, d := range readyAt {
		times = append(times, d)
	}
	slices.Sort(times)
	fmt.Printf("\nburst of %d (created over %v, pool of %d warm): time from the first create until k ServiceKeys were Ready\n", burst, createTime.Round(time.Millisecond), depth)
	fmt.Printf("| k | time |\n|---|---|\n")
	ks := []int{1, depth, depth + 1, burst / 10, burst / 4, burst / 2, 3 * burst / 4, burst}
	slices.Sort(ks)
	for _, k := range slices.Compact(ks) {
		if k >= 1 && k <= burst {
			fmt.Printf("| %d | %v |\n", k, times[k-1].Round(time.Millisecond))
		}
	}
	return nil
}
