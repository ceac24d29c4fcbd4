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

package tokenserver

import (
	"container/heap"
	"crypto/sha256"
	"net/http"
	"strings"
	"sync"
	"time"
)

// MaxJTIBytes bounds a `jti`: RFC 7519 §4.1.7 sets no length, but a value is only an
// identifier, and a long one would only cost memory and hashing.
const MaxJTIBytes = 256

// replayEntryBytes is the measured heap cost of one remembered assertion (a 32-byte
// digest in a map and in a heap of expiries), rounded up; TestReplayCacheMemory checks it.
const replayEntryBytes = 160

// Digest is what the replay cache keeps of an assertion: a SHA-256, whatever the size
// of what it stands for.
type Digest [sha256.Size]byte

// JTIDigest is the digest of an assertion's `jti` (RFC 7523 §3, item 7).
func JTIDigest(jti string) Digest { return sha256.Sum256([]byte("jti\x00" + jti)) }

// AssertionDigest is the digest of an assertion that carries no `jti`, taken over
// what its signature covers (header and claims, RFC 7515 §5.1): the same grant is
// refused until it expires, however its signature is spelled.
func AssertionDigest(raw string) Digest {
	signed := raw
	if i := strings.LastIndexByte(raw, '.'); i >= 0 {
		signed = raw[:i]
	}
	return sha256.Sum256([]byte("jws\x00" + signed))
}

// ReplayCache remembers assertions until they expire, so a captured assertion cannot
// be exchanged twice (RFC 7523 §3, item 7). It is bounded twice: each client (an
// authenticated ServiceKey: entries are recorded only after the signature verified)
// may hold at most PerClient entries, so a client can exhaust only its own share
// (429); and the replica holds at most Max, beyond which every grant gets 503 rather
// than an entry being forgotten early. Entries leave in expiry order, in O(log n).
type ReplayCache struct {
	mu        sync.Mutex
	max       int
	perClient int
	total     int
	clients   map[string]*replayClient
	// order is a min-heap of the clients by their earliest expiry.
	order clientHeap
}

// replayClient is one client's share: digests, and their expiries as a min-heap.
type replayClient struct {
	id     string
	seen   map[Digest]struct{}
	expiry entryHeap
	index  int // position in ReplayCache.order
}

type replayEntry struct {
	digest  Digest
	expires int64 // Unix nanoseconds
}

// NewReplayCache holds at most maxEntries entries, and at most perClient per client
// (both at least 1; Start refuses options below that).
func NewReplayCache(maxEntries, perClient int) *ReplayCache {
	maxEntries = max(maxEntries, 1)
	return &ReplayCache{max: maxEntries, perClient: min(max(perClient, 1), maxEntries), clients: map[string]*replayClient{}}
}

// Seen says whether d is remembered for clientID at now, without recording it: a
// replay is refused before it can spend the client's rate budget.
func (c *ReplayCache) Seen(clientID string, d Digest, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evict(now.UnixNano())
	if cl := c.clients[clientID]; cl != nil {
		_, ok := cl.seen[d]
		return ok
	}
	return false
}

// replayError is the answer to an assertion used before.
func replayError(code string) *Error {
	return newError(code, "the assertion was already used (same jti, or the same assertion without jti); sign a new assertion for each request")
}

// Len is the number of entries held.
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Record remembers d for clientID until expires. The error says the assertion was
// used already (code: invalid_grant or invalid_client), that the client's share is
// full (429), or that the replica's cache is full (503); Retry-After says when an
// entry of the share, or of the cache, expires.
func (c *ReplayCache) Record(clientID string, d Digest, expires, now time.Time, code string) *Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evict(now.UnixNano())
	cl := c.clients[clientID]
	if cl != nil {
		if _, ok := cl.seen[d]; ok {
			return replayError(code)
		}
		if len(cl.seen) >= c.perClient {
			return errReplayShareFull(clientID, c.perClient, until(cl.expiry[0].expires, now))
		}
	}
	if c.total >= c.max {
		return &Error{Code: CodeTemporarilyUnavailable, Status: http.StatusServiceUnavailable, RetryAfter: until(c.order[0].expiry[0].expires, now),
			Description: "the replay cache is full; retry later"}
	}
	fresh := cl == nil
	if fresh {
		cl = &replayClient{id: clientID, seen: map[Digest]struct{}{}}
		c.clients[clientID] = cl
	}
	cl.seen[d] = struct{}{}
	heap.Push(&cl.expiry, replayEntry{digest: d, expires: expires.UnixNano()})
	if fresh {
		heap.Push(&c.order, cl)
	} else {
		heap.Fix(&c.order, cl.index)
	}
	c.total++
	return nil
}

// evict drops every entry expired at now, earliest first; a client left with none is
// forgotten. Each dropped entry costs O(log n).
func (c *ReplayCache) evict(now int64) {
	for len(c.order) > 0 {
		cl := c.order[0]
		if cl.expiry[0].expires > now {
			return
		}
		for len(cl.expiry) > 0 && cl.expiry[0].expires <= now {
			e := heap.Pop(&cl.expiry).(replayEntry)
			delete(cl.seen, e.digest)
			c.total--
		}
		if len(cl.expiry) == 0 {
			heap.Pop(&c.order)
			delete(c.clients, cl.id)
		} else {
			heap.Fix(&c.order, 0)
		}
	}
}

// until is the wait from now to t (Unix nanoseconds), at least one second.
func until(t int64, now time.Time) time.Duration {
	return max(time.Duration(t-now.UnixNano()), time.Second)
}

// entryHeap orders one client's entries by expiry (container/heap).
type entryHeap []replayEntry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].expires < h[j].expires }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// clientHeap orders clients by their earliest expiry (container/heap).
type clientHeap []*replayClient

func (h clientHeap) Len() int { return len(h) }
func (h clientHeap) Less(i, j int) bool {
	return h[i].expiry[0].expires < h[j].expiry[0].expires
}
func (h clientHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *clientHeap) Push(x any) {
	cl := x.(*replayClient)
	cl.index = len(*h)
	*h = append(*h, cl)
}
func (h *clientHeap) Pop() any {
	old := *h
	cl := old[len(old)-1]
	*h = old[:len(old)-1]
	return cl
}
