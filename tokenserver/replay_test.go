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
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestReplayCache(t *testing.T) {
	t0 := now
	type step struct {
		client, jti string
		expires     time.Duration // from t0
		at          time.Duration // from t0
		status      int           // 0: recorded
		retryAfter  time.Duration
	}
	cases := map[string]struct {
		max, perClient int
		steps          []step
		wantLen        int
	}{
		"a jti is refused while unexpired, per client": {10, 10, []step{
			{"a", "j", time.Minute, 0, 0, 0},
			{"a", "j", time.Minute, 30 * time.Second, 400, 0},
			{"b", "j", 2 * time.Minute, 30 * time.Second, 0, 0}, // another client's jti space
			{"a", "j", time.Minute, time.Minute, 0, 0},          // expired: forgotten, usable again
		}, 2},
		"a client's share is its own": {10, 2, []step{
			{"a", "1", time.Hour, 0, 0, 0},
			{"a", "2", 10 * time.Minute, 0, 0, 0},
			{"a", "3", time.Hour, 0, 429, 10 * time.Minute}, // Retry-After: its earliest expiry
			{"b", "1", time.Hour, 0, 0, 0},
			{"a", "3", time.Hour, 10 * time.Minute, 0, 0}, // after "2" expired
		}, 3},
		"a full cache refuses everyone with 503": {3, 2, []step{
			{"a", "1", time.Hour, 0, 0, 0},
			{"b", "1", 5 * time.Minute, 0, 0, 0},
			{"c", "1", time.Hour, 0, 0, 0},
			{"d", "1", time.Hour, time.Minute, 503, 4 * time.Minute},
			{"d", "1", time.Hour, 5 * time.Minute, 0, 0}, // b's entry expired
		}, 3},
		"eviction in expiry order across clients": {100, 100, []step{
			{"a", "late", 3 * time.Hour, 0, 0, 0},
			{"b", "early", time.Hour, 0, 0, 0},
			{"a", "mid", 2 * time.Hour, 0, 0, 0},
			{"c", "x", 4 * time.Hour, 90 * time.Minute, 0, 0}, // b's gone, a's two stay
			{"a", "mid", 4 * time.Hour, 90 * time.Minute, 400, 0},
			{"b", "early", 4 * time.Hour, 90 * time.Minute, 0, 0},
		}, 4},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := NewReplayCache(tc.max, tc.perClient)
			for i, s := range tc.steps {
				e := c.Record(s.client, JTIDigest(s.jti), t0.Add(s.expires), t0.Add(s.at), CodeInvalidGrant)
				switch {
				case s.status == 0 && e != nil:
					t.Fatalf("step %d: refused: %v", i, e)
				case s.status != 0 && (e == nil || e.Status != s.status):
					t.Fatalf("step %d: got %v, want status %d", i, e, s.status)
				case s.retryAfter != 0 && e.RetryAfter != s.retryAfter:
					t.Fatalf("step %d: Retry-After %v, want %v", i, e.RetryAfter, s.retryAfter)
				}
			}
			if got := c.Len(); got != tc.wantLen {
				t.Errorf("Len = %d, want %d", got, tc.wantLen)
			}
		})
	}
}

// TestReplayCacheForgetsIdleClients: once every entry of a client expired, nothing of
// it is left, so the cache does not grow with every client ever seen.
func TestReplayCacheForgetsIdleClients(t *testing.T) {
	c := NewReplayCache(1000, 10)
	for i := range 100 {
		if e := c.Record("c"+strconv.Itoa(i), JTIDigest("j"), now.Add(time.Minute), now, CodeInvalidGrant); e != nil {
			t.Fatal(e)
		}
	}
	if e := c.Record("last", JTIDigest("j"), now.Add(time.Hour), now.Add(2*time.Minute), CodeInvalidGrant); e != nil {
		t.Fatal(e)
	}
	if len(c.clients) != 1 || len(c.order) != 1 || c.total != 1 {
		t.Errorf("%d clients, %d ordered, %d entries; want 1 each", len(c.clients), len(c.order), c.total)
	}
}

// TestReplayCacheMemory checks the bound docs/security.md states: a full cache costs
// at most replayEntryBytes per entry, whatever the size of the jtis or assertions.
func TestReplayCacheMemory(t *testing.T) {
	const clients, perClient = 50, 2000
	long := strings.Repeat("x", MaxJTIBytes-8)
	heap := func() int64 { // the suite's informers allocate too: a signed difference
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	before := heap()
	c := NewReplayCache(clients*perClient, perClient)
	for i := range clients * perClient {
		jti := fmt.Sprintf("%s%08d", long, i)
		if e := c.Record("team/c"+strconv.Itoa(i%clients), JTIDigest(jti), now.Add(time.Hour), now, CodeInvalidGrant); e != nil {
			t.Fatal(e)
		}
	}
	after := heap()
	perEntry := float64(after-before) / float64(clients*perClient)
	t.Logf("%.0f bytes per entry (%d entries of %d-byte jtis)", perEntry, c.Len(), len(long)+8)
	if perEntry > replayEntryBytes {
		t.Errorf("%.0f bytes per entry, more than the documented %d", perEntry, replayEntryBytes)
	}
	if e := c.Record("team/c0", JTIDigest("one more"), now.Add(time.Hour), now, CodeInvalidGrant); e == nil || e.Status != http.StatusTooManyRequests {
		t.Errorf("a client over its share: %v, want 429", e)
	}
	runtime.KeepAlive(c)
}
