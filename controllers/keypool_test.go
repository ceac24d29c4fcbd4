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

package controllers

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// smallKeys generates 1024-bit keys whatever size is asked for (a pool test needs
// distinct keys, not strong ones) and remembers the sizes asked for.
type smallKeys struct {
	mu    sync.Mutex
	asked []int32
	made  []*rsa.PrivateKey
}

func (g *smallKeys) New(bits int32, enc v1.PrivateKeyEncoding) (*NewKey, error) {
	g.mu.Lock()
	g.asked = append(g.asked, bits)
	g.mu.Unlock()
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.made = append(g.made, key)
	g.mu.Unlock()
	pem, err := keyutil.EncodePrivateKey(key, enc)
	if err != nil {
		return nil, err
	}
	return &NewKey{Key: key, PEM: pem}, nil
}

func waitFull(t *testing.T, p *KeyPool, bits int32) {
	t.Helper()
	err := testenv.Poll(fmt.Sprintf("the %d-bit pool full", bits), 30*time.Second, func() (bool, string) {
		return p.Len(bits) == cap(p.pools[bits]), fmt.Sprintf("%d of %d keys", p.Len(bits), cap(p.pools[bits]))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKeyPool: pooled keys are each handed out once and refilled in the background; a
// drained pool, or a size without a pool, falls back to generating and counts a miss.
func TestKeyPool(t *testing.T) {
	src := &smallKeys{}
	p := NewKeyPool(src, []int32{1024, 1024}, 3, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Start(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFull(t, p, 1024)
	src.mu.Lock()
	pooled := slices.Clone(src.made) // what the refill made: the pool's keys
	src.mu.Unlock()

	seen := map[*rsa.PrivateKey]bool{}
	for i := range 5 { // 3 from the pool, then whatever the refill has made, then generated
		k, err := p.New(1024, v1.PKCS1)
		if err != nil {
			t.Fatal(err)
		}
		if seen[k.Key] {
			t.Fatalf("key %d handed out twice", i)
		}
		seen[k.Key] = true
		if _, enc, err := keyutil.ParsePrivateKey(k.PEM); err != nil || enc != v1.PKCS1 {
			t.Errorf("key %d: PEM in %s (%v), want the PKCS1 asked for", i, enc, err)
		}
		if i < 3 && !slices.Contains(pooled, k.Key) {
			t.Errorf("key %d was not one of the pool's (the pool held 3)", i)
		}
	}
	if got := testutil.ToFloat64(p.misses.WithLabelValues("1024")); got > 2 {
		t.Errorf("%v misses for 5 keys from a pool of 3, want at most 2", got)
	}
	if _, err := p.New(3072, v1.PKCS8); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(p.misses.WithLabelValues("3072")); got != 1 {
		t.Errorf("3072-bit misses = %v, want 1 (no pool of that size)", got)
	}
	waitFull(t, p, 1024) // refilled after the takes
	if len(p.sizes) != 1 {
		t.Errorf("sizes %v: a size given twice makes one pool", p.sizes)
	}
}

// TestKeyPoolYieldsToReconciles: the refill picks nothing to fill while a reconcile is
// generating a key, and the smallest size first otherwise.
func TestKeyPoolYieldsToReconciles(t *testing.T) {
	cases := map[string]struct {
		foreground int64
		fill       map[int32]int
		want       int32
		wantOK     bool
	}{
		"idle, all empty":             {0, nil, 2048, true},
		"idle, 2048 full":             {0, map[int32]int{2048: 2}, 4096, true},
		"idle, all full":              {0, map[int32]int{2048: 2, 4096: 2}, 0, false},
		"a reconcile generates a key": {1, nil, 0, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := NewKeyPool(&smallKeys{}, []int32{4096, 2048}, 2, logr.Discard())
			p.foreground.Store(tc.foreground)
			for bits, n := range tc.fill {
				for range n {
					p.pools[bits] <- pooledKey{key: &rsa.PrivateKey{}}
				}
			}
			got, ok := p.nextToFill()
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("nextToFill() = %d, %v; want %d, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestKeyPoolDropsStaleKeys: a key older than MaxAge is never handed out.
func TestKeyPoolDropsStaleKeys(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	p := NewKeyPool(&smallKeys{}, []int32{1024}, 2, logr.Discard())
	p.Clock = clk
	old, fresh := &rsa.PrivateKey{}, &rsa.PrivateKey{}
	p.pools[1024] <- pooledKey{key: old, at: clk.Now()}
	clk.Step(p.MaxAge)
	p.pools[1024] <- pooledKey{key: fresh, at: clk.Now()}
	if got := p.take(1024); got != fresh {
		t.Errorf("take handed out %p, want the fresh key %p (the stale one %p dropped)", got, fresh, old)
	}
	p.pools[1024] <- pooledKey{key: old, at: clk.Now()}
	clk.Step(p.MaxAge / 2)
	p.pools[1024] <- pooledKey{key: fresh, at: clk.Now()}
	clk.Step(p.MaxAge / 2)
	if wait := p.dropStale(); wait != p.MaxAge/2 || p.Len(1024) != 1 {
		t.Errorf("dropStale: %d keys left, next in %v; want 1, and the refill to wake in %v when it turns stale",
			p.Len(1024), wait, p.MaxAge/2)
	}
	if got := p.take(1024); got != fresh {
		t.Errorf("the kept key is %p, want %p", got, fresh)
	}
	if wait := p.dropStale(); wait != p.MaxAge {
		t.Errorf("empty pool: next check in %v, want MaxAge", wait)
	}
}

// failingSource generates nothing.
type failingSource struct{}

func (failingSource) New(int32, v1.PrivateKeyEncoding) (*NewKey, error) {
	return nil, errors.New("no entropy today")
}

// TestKeyPoolDropsStaleKeysWhileFailing: a pool that cannot fill (its source fails)
// still drops a key that turned stale in another size's pool, without a take.
func TestKeyPoolDropsStaleKeysWhileFailing(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	p := NewKeyPool(failingSource{}, []int32{1024, 2048}, 1, logr.Discard())
	p.Clock = clk
	p.pools[1024] <- pooledKey{key: &rsa.PrivateKey{}, at: clk.Now()}
	clk.Step(p.MaxAge)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Start(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if err := testenv.Poll("the stale key dropped", 30*time.Second, func() (bool, string) {
		return p.Len(1024) == 0, fmt.Sprintf("%d keys of 1024 bits pooled", p.Len(1024))
	}); err != nil {
		t.Fatal(err)
	}
}

// TestKeyPoolRefusesWrongSize: a source that returns another size fills nothing.
func TestKeyPoolRefusesWrongSize(t *testing.T) {
	src := &smallKeys{} // makes 1024-bit keys whatever is asked
	p := NewKeyPool(src, []int32{2048}, 1, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Start(ctx); close(done) }()
	// One attempt is enough: Start pools or refuses its result before it looks at ctx.
	err := testenv.Poll("the refill asks for a key", 30*time.Second, func() (bool, string) {
		src.mu.Lock()
		defer src.mu.Unlock()
		return len(src.asked) > 0, "not asked yet"
	})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if p.Len(2048) != 0 {
		t.Error("a 1024-bit key was pooled as 2048")
	}
}

// TestNoPool: depth 0 generates every key when asked.
func TestNoPool(t *testing.T) {
	src := &smallKeys{}
	p := NewKeyPool(src, []int32{2048}, 0, logr.Discard())
	if _, err := p.New(2048, v1.PKCS1); err != nil {
		t.Fatal(err)
	}
	if len(src.asked) != 1 || len(p.Collectors()) != 1 {
		t.Errorf("asked %v, %d collectors; want one generation and only the miss counter", src.asked, len(p.Collectors()))
	}
}
