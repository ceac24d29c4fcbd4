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
	"slices"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

const namespace = "bench"

// watcher records when the bench's own watch first saw each ServiceKey Ready.
type watcher struct {
	mu    sync.Mutex
	ready map[string]time.Time
}

// watch starts an informer on the bench namespace's ServiceKeys (in this process,
// apart from the controller) and returns once it has synced.
func watch(ctx context.Context, env *testenv.Env) (*watcher, error) {
	c, err := cache.New(env.Config, cache.Options{Scheme: env.Scheme,
		DefaultNamespaces: map[string]cache.Config{namespace: {}}, DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		return nil, fmt.Errorf("create the bench's cache: %w", err)
	}
	inf, err := c.GetInformer(ctx, &v1.ServiceKey{})
	if err != nil {
		return nil, fmt.Errorf("ServiceKey informer: %w", err)
	}
	w := &watcher{ready: map[string]time.Time{}}
	seen := func(obj any) {
		sk, ok := obj.(*v1.ServiceKey)
		if !ok || !meta.IsStatusConditionTrue(sk.Status.Conditions, v1.ConditionReady) {
			return
		}
		now := time.Now()
		w.mu.Lock()
		if _, done := w.ready[sk.Name]; !done {
			w.ready[sk.Name] = now
		}
		w.mu.Unlock()
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: seen, UpdateFunc: func(_, obj any) { seen(obj) },
	}); err != nil {
		return nil, fmt.Errorf("ServiceKey event handler: %w", err)
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("the bench's cache did not sync")
	}
	return w, nil
}

// readyAt is when the watch first saw the ServiceKey Ready.
func (w *watcher) readyAt(name string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.ready[name]
	return t, ok
}

// waitAll waits until every named ServiceKey was seen Ready and returns the times,
// sorted.
func (w *watcher) waitAll(names []string, timeout time.Duration) ([]time.Time, error) {
	var times []time.Time
	err := testenv.Poll(fmt.Sprintf("%d ServiceKeys Ready", len(names)), timeout, func() (bool, string) {
		times = times[:0]
		for _, n := range names {
			if t, ok := w.readyAt(n); ok {
				times = append(times, t)
			}
		}
		return len(times) == len(names), fmt.Sprintf("%d of %d Ready", len(times), len(names))
	})
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	return times, err
}

// create makes a default ServiceKey of the given size in the bench namespace.
func (b *bench) create(ctx context.Context, name string, bits int32) error {
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	sk.Spec.PrivateKey.Size = bits
	if err := b.env.Client.Create(ctx, sk); err != nil {
		return fmt.Errorf("create ServiceKey %s: %w", name, err)
	}
	b.created.Add(1)
	return nil
}

// sequential creates n ServiceKeys one at a time, each once the previous is Ready
// and, when warm, once the pool holds depth keys of the size again, and returns the
// create-to-Ready latencies.
func (b *bench) sequential(prefix string, n int, bits int32, warm bool) ([]time.Duration, error) {
	ctx := context.Background()
	var lat []time.Duration
	for i := range n {
		if warm {
			if err := b.poolFull(bits); err != nil {
				return nil, err
			}
		}
		name := fmt.Sprintf("%s-%d-%03d", prefix, bits, i)
		start := time.Now()
		if err := b.create(ctx, name, bits); err != nil {
			return nil, err
		}
		at, err := b.w.waitAll([]string{name}, time.Minute)
		if err != nil {
			return nil, err
		}
		lat = append(lat, at[0].Sub(start))
	}
	return lat, nil
}

// poolFull waits until the controller's pool gauge shows poolDepth keys of the size.
func (b *bench) poolFull(bits int32) error {
	series := fmt.Sprintf(`servicekey_key_pool_keys{bits="%d"}`, bits)
	return testenv.Poll("the key pool full", 2*time.Minute, func() (bool, string) {
		v, err := testenv.MetricValue(b.ctrlMetrics, series)
		if err != nil {
			return false, err.Error()
		}
		return v >= poolDepth, fmt.Sprintf("%s %v", series, v)
	})
}

// poolDepth is the chart's default controller.keyPool.depth, set explicitly.
const poolDepth = 4

func (b *bench) latencyWarm() error {
	fmt.Printf("## apply-to-Ready, one ServiceKey at a time (client-go create → Ready seen by a watch)\n\n")
	fmt.Printf("| key size | pool | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|---|\n")
	for _, bits := range []int32{2048, 4096} {
		lat, err := b.sequential("warm", b.flags.latency, bits, true)
		if err != nil {
			return err
		}
		fmt.Println(latencyRow(bits, fmt.Sprintf("warm (depth %d)", poolDepth), lat))
	}
	return nil
}

// latencyCold restarts the controller without a pool and measures again; it runs
// last, after every other phase, so the restart disturbs nothing else.
func (b *bench) latencyCold() error {
	ctx := context.Background()
	if err := b.s.Restart(ctx, &b.s.Controller, syscall.SIGTERM, b.s.ControllerReadyURL(), "--key-pool-depth=0"); err != nil {
		return fmt.Errorf("restart the controller without a pool: %w", err)
	}
	// With leader election, the restarted controller reconciles once it holds the
	// Lease; the first ServiceKey's latency includes that wait unless it is taken first.
	if _, err := b.sequential("settle", 1, 2048, false); err != nil {
		return err
	}
	fmt.Printf("\n## apply-to-Ready without a pool (controller restarted with --key-pool-depth=0)\n\n")
	fmt.Printf("| key size | pool | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|---|\n")
	for _, bits := range []int32{2048, 4096} {
		lat, err := b.sequential("cold", b.flags.latency, bits, false)
		if err != nil {
			return err
		}
		fmt.Println(latencyRow(bits, "cold", lat))
	}
	return nil
}

func latencyRow(bits int32, pool string, lat []time.Duration) string {
	return fmt.Sprintf("| %d | %s | %d | %v | %v | %v | %v |", bits, pool, len(lat),
		pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 100))
}

// pct is the p-th percentile (nearest rank), rounded for the table; 0 for no samples.
func pct(lat []time.Duration, p int) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return s[max(i, 0)].Round(100 * time.Microsecond)
}
