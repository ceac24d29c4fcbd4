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
	"crypto/rsa"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// KeyPool is a KeyGenerator that hands out RSA keys generated ahead of time, so a new
// ServiceKey does not wait for the generation (about 50 ms for 2048 bits and half a
// second or more for 4096 on one core). The keys live in this process's memory only:
// never written anywhere, dropped on restart, each handed out once (a channel
// receive), and never older than MaxAge (older ones are dropped when reached), so a
// memory dump exposes only keys issued within MaxAge after it. A size without a pool,
// or an empty pool, falls back to generating (Source). Refilling runs on one
// goroutine, one key at a time, and does not start a key while a reconcile is
// generating one itself (a key it has begun is finished).
type KeyPool struct {
	// Source generates the keys, for the pool and when it is empty.
	Source KeyGenerator
	// Log reports generation errors of the refill.
	Log logr.Logger
	// MaxAge is how long a pooled key may wait before it is dropped unused.
	MaxAge time.Duration
	// Clock tells the keys' age.
	Clock clock.PassiveClock

	pools      map[int32]chan pooledKey
	sizes      []int32
	refill     chan struct{} // a key was taken: wake the filler
	foreground atomic.Int64  // keys being generated for a reconcile right now
	misses     *prometheus.CounterVec
}

// pooledKey is a key waiting in the pool and when it was generated.
type pooledKey struct {
	key *rsa.PrivateKey
	at  time.Time
}

// DefaultKeyPoolMaxAge bounds how long a pooled key waits to be issued.
const DefaultKeyPoolMaxAge = time.Hour

// refillRetry is the wait after a failed generation before the refill tries again.
const refillRetry = 10 * time.Second

// NewKeyPool keeps up to depth keys of each size in sizes; depth < 1 or no sizes
// means no pool (every key is generated when asked for).
func NewKeyPool(source KeyGenerator, sizes []int32, depth int, log logr.Logger) *KeyPool {
	p := &KeyPool{Source: source, Log: log, MaxAge: DefaultKeyPoolMaxAge, Clock: clock.RealClock{},
		pools: map[int32]chan pooledKey{}, refill: make(chan struct{}, 1),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "servicekey_key_pool_misses_total",
			Help: "Key pairs generated while a reconcile waited, because the pool of that size was empty or absent.",
		}, []string{"bits"})}
	if depth < 1 {
		return p
	}
	for _, bits := range sizes {
		if _, ok := p.pools[bits]; !ok {
			p.pools[bits] = make(chan pooledKey, depth)
			p.sizes = append(p.sizes, bits)
		}
	}
	slices.Sort(p.sizes)
	return p
}

// New hands out a pooled key of the size when there is one not older than MaxAge,
// otherwise generates it.
func (p *KeyPool) New(bits int32, encoding v1.PrivateKeyEncoding) (*NewKey, error) {
	if key := p.take(bits); key != nil {
		pem, err := keyutil.EncodePrivateKey(key, encoding)
		if err != nil {
			return nil, fmt.Errorf("encode a pooled %d-bit key: %w", bits, err)
		}
		return &NewKey{Key: key, PEM: pem}, nil
	}
	p.misses.WithLabelValues(fmt.Sprint(bits)).Inc()
	p.foreground.Add(1)
	defer func() {
		p.foreground.Add(-1)
		p.wake()
	}()
	return p.Source.New(bits, encoding)
}

// take receives a fresh enough key of the size, dropping stale ones; nil when none.
func (p *KeyPool) take(bits int32) *rsa.PrivateKey {
	for {
		select {
		case k := <-p.pools[bits]: // a nil channel (no pool of that size) never receives
			p.wake()
			if p.Clock.Since(k.at) < p.MaxAge {
				return k.key
			}
		default:
			return nil
		}
	}
}

func (p *KeyPool) wake() {
	select {
	case p.refill <- struct{}{}:
	default:
	}
}

// Start fills the pools until ctx is done (a manager.Runnable). When they are full it
// wakes as the oldest key turns stale, so no key stays in memory past MaxAge even when
// nobody takes one.
func (p *KeyPool) Start(ctx context.Context) error {
	for {
		// Every round, not only when full: a pool kept from filling (a failing source,
		// steady demand for another size) must not keep its keys past MaxAge either.
		wait := p.dropStale()
		bits, ok := p.nextToFill()
		if !ok {
			// Full: sleep until the oldest key turns stale, or a take wakes it.
			if !p.sleep(ctx, wait) {
				return nil
			}
			continue
		}
		k, err := p.Source.New(bits, v1.PKCS8)
		if err == nil && k.Key.N.BitLen() != int(bits) {
			err = fmt.Errorf("the key source returned %d bits for %d", k.Key.N.BitLen(), bits)
		}
		if err != nil {
			p.Log.Error(err, "fill the key pool; retrying", "bits", bits, "retryIn", refillRetry.String())
			if !p.sleep(ctx, refillRetry) {
				return nil
			}
			continue
		}
		select {
		case p.pools[bits] <- pooledKey{key: k.Key, at: p.Clock.Now()}:
		default: // full: only Start sends, so this does not happen
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// sleep waits for a wake-up or d; false when ctx is done.
func (p *KeyPool) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-p.refill:
	case <-t.C:
	}
	return true
}

// dropStale drops the keys older than MaxAge from every pool, keeping the others in
// their order (oldest first), and returns how long until the oldest kept key turns
// stale: MaxAge when none is kept. Only the refill goroutine sends, so there is room
// to put the kept keys back.
func (p *KeyPool) dropStale() time.Duration {
	wait := p.MaxAge
	for _, bits := range p.sizes {
		c := p.pools[bits]
		var kept []pooledKey
	drain:
		for range cap(c) {
			select {
			case k := <-c:
				if age := p.Clock.Since(k.at); age < p.MaxAge {
					kept = append(kept, k)
					wait = min(wait, p.MaxAge-age)
				}
			default: // a take may have emptied it first
				break drain
			}
		}
		for _, k := range kept {
			c <- k
		}
	}
	return wait
}

// nextToFill is the smallest size whose pool is not full, unless a reconcile is
// generating a key (the refill yields to it).
func (p *KeyPool) nextToFill() (int32, bool) {
	if p.foreground.Load() > 0 {
		return 0, false
	}
	for _, bits := range p.sizes {
		if c := p.pools[bits]; len(c) < cap(c) {
			return bits, true
		}
	}
	return 0, false
}

// Len is the number of keys of the size waiting in the pool.
func (p *KeyPool) Len(bits int32) int { return len(p.pools[bits]) }

// NeedLeaderElection is true: only the leader issues keys, so only it fills the pools.
func (p *KeyPool) NeedLeaderElection() bool { return true }

// Collectors are the pool's metrics: keys waiting per size, and misses.
func (p *KeyPool) Collectors() []prometheus.Collector {
	cs := []prometheus.Collector{p.misses}
	for _, bits := range p.sizes {
		c := p.pools[bits]
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "servicekey_key_pool_keys",
			Help:        "Pre-generated key pairs waiting in the controller's memory, by size.",
			ConstLabels: prometheus.Labels{"bits": fmt.Sprint(bits)},
		}, func() float64 { return float64(len(c)) }))
	}
	return cs
}
