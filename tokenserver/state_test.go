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
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/redis/go-redis/v9"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// statesUnderTest are a State and what it was built with: the same rules hold in memory
// and in Redis, so each case runs on both.
func statesUnderTest(t *testing.T) map[string]State {
	r := testenv.StartRedis(t)
	rs, err := NewRedisState(RedisOptions{URL: r.URL(), Rate: Rate{PerSecond: 1, Burst: 2}, ReplayPerClient: 3, FamiliesPerClient: 2, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	return map[string]State{
		"memory": NewMemoryState(NewReplayCache(100, 3), NewLimiter(1, 2), 2),
		"redis":  rs,
	}
}

func digestOf(s string) *Digest { d := Digest(sha256.Sum256([]byte(s))); return &d }

// stateStep is one call and the answer it must get ("" for success, else the error
// code and a part of its description).
type stateStep struct {
	at   time.Duration // after the case's start
	call func(s State, client string, start time.Time) *Error
	want string
}

func admit(jti string, family *Family) func(State, string, time.Time) *Error {
	return func(s State, client string, start time.Time) *Error {
		return s.Admit(context.Background(), Admission{ClientID: client, Now: start, Digest: digestOf(jti),
			ReplayUntil: start.Add(10 * time.Second), Code: CodeInvalidGrant, Family: withClient(family, client, start)})
	}
}

func withClient(f *Family, client string, start time.Time) *Family {
	if f == nil {
		return nil
	}
	g := *f
	g.ClientID, g.Expires = client, start.Add(time.Minute)
	return &g
}

// family starts at generation 2 of ServiceKey uid-1, bound to kid-1.
func family(id, token string) *Family {
	return &Family{ID: id, Binding: "kid-1", UID: "uid-1", Generation: 2, Scope: "a b", Current: RefreshDigest(token)}
}

// refresh is a refresh by a replica that knows uid-1 at generation 2.
func refresh(id, presented, next, scope string, bindings ...string) func(State, string, time.Time) *Error {
	return refreshAt(2, id, presented, next, scope, bindings...)
}

func refreshAt(generation int64, id, presented, next, scope string, bindings ...string) func(State, string, time.Time) *Error {
	return func(s State, client string, start time.Time) *Error {
		if bindings == nil {
			bindings = []string{"kid-1"}
		}
		_, e := s.Refresh(context.Background(), Rotation{ClientID: client, FamilyID: id, Presented: RefreshDigest(presented),
			Next: RefreshDigest(next), UID: "uid-1", Generation: generation, Bindings: bindings, Scope: scope, Now: start})
		return e
	}
}

// at runs call at start+d: the steps of a case keep one client and move its clock.
func at(d time.Duration, call func(State, string, time.Time) *Error, want string) stateStep {
	return stateStep{at: d, call: call, want: want}
}

func TestStateRules(t *testing.T) {
	skew := ClockSkewMargin // Redis keeps entries that much longer; memory has one clock
	cases := map[string][]stateStep{
		"a replay is refused until it expires": {
			at(0, admit("j1", nil), ""), at(time.Second, admit("j1", nil), "invalid_grant already used"),
			at(11*time.Second+skew, admit("j1", nil), ""),
		},
		"the rate limit is one bucket": {
			at(0, admit("j1", nil), ""), at(0, admit("j2", nil), ""), at(0, admit("j3", nil), "invalid_request too many token requests"),
			at(time.Second, admit("j3", nil), ""),
		},
		"a client's share of the replay set is bounded": {
			at(0, admit("j1", nil), ""), at(time.Second, admit("j2", nil), ""), at(2*time.Second, admit("j3", nil), ""),
			at(3*time.Second, admit("j4", nil), "invalid_request its share of the replay cache"),
			at(11*time.Second+skew, admit("j4", nil), ""),
		},
		"a refresh token is used once; its reuse revokes the family": {
			at(0, admit("j1", family("f1", "t1")), ""), at(time.Second, refresh("f1", "t1", "t2", ""), ""),
			at(2*time.Second, refresh("f1", "t1", "t3", ""), "invalid_grant already used"),
			at(3*time.Second, refresh("f1", "t2", "t3", ""), "invalid_grant not valid"),
		},
		"scope narrows, never widens, and a refused widening changes nothing": {
			at(0, admit("j1", family("f1", "t1")), ""), at(time.Second, refresh("f1", "t1", "t2", "a"), ""),
			at(2*time.Second, refresh("f1", "t2", "t3", "a c"), "invalid_scope only narrow"),
			at(3*time.Second, refresh("f1", "t2", "t3", "b"), ""),
		},
		"a family dies with its key": {
			at(0, admit("j1", family("f1", "t1")), ""), at(time.Second, refresh("f1", "t1", "t2", "", "kid-2"), "invalid_grant no longer current"),
			at(2*time.Second, refresh("f1", "t1", "t2", ""), "invalid_grant not valid"),
		},
		"a replica that lags waits; a newer spec ends the family": {
			at(0, admit("j1", family("f1", "t1")), ""),
			at(time.Second, refreshAt(1, "f1", "t1", "t2", ""), "temporarily_unavailable not yet seen"),
			at(2*time.Second, refresh("f1", "t1", "t2", ""), ""),
			at(3*time.Second, refreshAt(3, "f1", "t2", "t3", ""), "invalid_grant no longer current"),
			at(4*time.Second, refresh("f1", "t2", "t3", ""), "invalid_grant not valid"),
		},
		"a family ends at its ttl": {
			at(0, admit("j1", family("f1", "t1")), ""), at(time.Minute, refresh("f1", "t1", "t2", ""), "invalid_grant not valid"),
		},
		"a client keeps its newest families": {
			at(0, admit("j1", family("f1", "t1")), ""), at(time.Second, admit("j2", family("f2", "t2")), ""),
			at(2*time.Second, admit("j3", family("f3", "t3")), ""),
			at(3*time.Second, refresh("f1", "t1", "x", ""), "invalid_grant not valid"),
			at(4*time.Second, refresh("f3", "t3", "y", ""), ""),
		},
		"a refresh spends the rate limit and a refused one keeps its token": {
			at(0, admit("j1", family("f1", "t1")), ""), at(0, admit("j2", nil), ""),
			at(0, refresh("f1", "t1", "t2", ""), "invalid_request too many token requests"),
			at(time.Second, refresh("f1", "t1", "t2", ""), ""),
		},
	}
	for stateName, s := range statesUnderTest(t) {
		for name, steps := range cases {
			t.Run(stateName+"/"+name, func(t *testing.T) {
				client := "ns/" + strings.ReplaceAll(name, " ", "-")
				start := time.Now() // Redis expires keys on its own clock
				for i, step := range steps {
					e := step.call(s, client, start.Add(step.at))
					checkStep(t, i, e, step.want)
				}
			})
		}
	}
}

// TestConcurrentRefreshes: of eight refreshes of one token at once, exactly one gets
// the next token; the others are reuses, and the family is revoked.
func TestConcurrentRefreshes(t *testing.T) {
	for name, s := range statesUnderTest(t) {
		t.Run(name, func(t *testing.T) {
			client, start := "ns/concurrent-"+name, time.Now()
			if e := admit("j1", family("f1", "t1"))(s, client, start); e != nil {
				t.Fatal(e)
			}
			var wg sync.WaitGroup
			var won atomic.Int32
			for i := range 8 {
				wg.Go(func() {
					if refresh("f1", "t1", fmt.Sprint("next-", i), "")(s, client, start.Add(time.Second)) == nil {
						won.Add(1)
					}
				})
			}
			wg.Wait()
			if won.Load() != 1 {
				t.Errorf("%d of 8 concurrent refreshes of one token succeeded; want 1", won.Load())
			}
		})
	}
}

func checkStep(t *testing.T, i int, e *Error, want string) {
	t.Helper()
	switch {
	case want == "" && e != nil:
		t.Fatalf("step %d: %v", i, e)
	case want == "":
	case e == nil:
		t.Fatalf("step %d accepted; want %s", i, want)
	default:
		code, part, _ := strings.Cut(want, " ")
		if e.Code != code || !strings.Contains(e.Description, part) {
			t.Fatalf("step %d: %v; want %s", i, e, want)
		}
		if e.Status == http.StatusTooManyRequests && e.RetryAfter <= 0 {
			t.Fatalf("step %d: 429 without Retry-After", i)
		}
	}
}

// TestRedisStateFailsClosed: with Redis stopped every call is refused with 503 and
// Retry-After, Problem says why, and the state answers again once Redis is back.
func TestRedisStateFailsClosed(t *testing.T) {
	r := testenv.StartRedis(t)
	rs, err := NewRedisState(RedisOptions{URL: r.URL(), ReplayPerClient: 10, FamiliesPerClient: 10, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rs.Close() }()
	start := time.Now()
	if e := admit("before", nil)(rs, "ns/app", start); e != nil || rs.Problem() != "" {
		t.Fatalf("with Redis up: %v, problem %q", e, rs.Problem())
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	for i, call := range []func(State, string, time.Time) *Error{admit("during", nil), refresh("f", "t", "u", "")} {
		e := call(rs, "ns/app", start)
		if e == nil || e.Status != http.StatusServiceUnavailable || e.Code != CodeTemporarilyUnavailable || e.RetryAfter <= 0 {
			t.Fatalf("call %d with Redis stopped: %v", i, e)
		}
	}
	if p := rs.Problem(); !strings.Contains(p, "Redis") || !strings.Contains(p, "503") || strings.Contains(p, r.Addr) {
		t.Errorf("Problem with Redis stopped: %q", p)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the state to answer again", func() (bool, string) {
		if e := admit("after", nil)(rs, "ns/app", start); e != nil {
			return false, e.Error()
		}
		return true, ""
	})
	if e := admit("before", nil)(rs, "ns/app", start); e == nil || e.Code != CodeInvalidGrant {
		t.Errorf("an assertion used before the restart: %v; want a replay refusal (append-only file)", e)
	}
	if rs.Problem() != "" {
		t.Errorf("Problem after recovery: %q", rs.Problem())
	}
}

// TestRedisRefusalIsNotAnOutage: a script Redis answers with an error reply (here a
// key of the wrong type; in production most likely maxmemory under noeviction) gets
// 503 with Retry-After and changes nothing, but Redis is not reported down: it
// answers, and /readyz would only flap.
func TestRedisRefusalIsNotAnOutage(t *testing.T) {
	r := testenv.StartRedis(t)
	rs, err := NewRedisState(RedisOptions{URL: r.URL(), ReplayPerClient: 10, FamiliesPerClient: 10, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rs.Close() }()
	admin := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer func() { _ = admin.Close() }()
	ctx, start, replaySet := context.Background(), time.Now(), rs.key("ns/app", "replay")
	if err := admin.Set(ctx, replaySet, "not a sorted set", 0).Err(); err != nil {
		t.Fatal(err)
	}
	e := admit("j1", nil)(rs, "ns/app", start)
	if e == nil || e.Status != http.StatusServiceUnavailable || e.RetryAfter <= 0 || !strings.Contains(e.Description, "refused") {
		t.Fatalf("with the script refused: %v; want 503 refused with Retry-After", e)
	}
	if p := rs.Problem(); p != "" {
		t.Errorf("a refusal reported as an outage: %q", p)
	}
	if err := admin.Del(ctx, replaySet).Err(); err != nil {
		t.Fatal(err)
	}
	if e := admit("j1", nil)(rs, "ns/app", start); e != nil {
		t.Errorf("the refused assertion afterwards: %v; want it accepted (the refusal recorded nothing)", e)
	}
}

// TestRedisURLErrorsHideThePassword: whatever is wrong with the URL, the error quotes
// no part of the password.
func TestRedisURLErrorsHideThePassword(t *testing.T) {
	cases := map[string]string{
		"slash in the password": "redis://user:Zq7/pW#x9@redis:6379/0",
		"bad escape":            "redis://user:Zq7%zzpWx9@redis:6379/0",
		"bad database":          "redis://user:Zq7pWx9@redis:6379/x",
		"another scheme":        "http://user:Zq7pWx9@redis:6379/0",
		"control character":     "redis://user:Zq7\x7fpWx9@redis:6379/0",
		"slash after digits":    "redis://u:123/Zq7pWx9@redis:6379/0",
		"question mark":         "redis://u:123?Zq7pWx9@redis:6379/0",
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseRedisURL(raw)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, part := range []string{"Zq7", "pW", "x9"} {
				if strings.Contains(err.Error(), part) {
					t.Errorf("error %q quotes %q", err, part)
				}
			}
		})
	}
}
