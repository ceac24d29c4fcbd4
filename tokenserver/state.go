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
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
)

// State is what grants need remembered between requests: the assertions already used
// (RFC 7523 §3, item 7), each client's rate-limit bucket, and refresh-token families
// (RFC 6749 §6). MemoryState keeps it in one replica; RedisState shares it between
// replicas, so a replay sent to another replica is refused and a client gets one rate
// limit however many replicas it reaches. Each call is one step (one round trip for
// Redis) that either changes nothing and refuses, or commits everything it decided.
type State interface {
	// Admit decides a grant that passed every local check: it refuses a replayed
	// digest, takes a token from the client's bucket, remembers the digest until
	// ReplayUntil, and starts the refresh-token family when one is given.
	Admit(ctx context.Context, a Admission) *Error
	// Refresh exchanges a refresh token (RFC 6749 §6): it refuses one that is unknown,
	// expired or was already used (revoking its family, RFC 9700 §4.14.2), whose key
	// is no longer usable (forgetting its family), or that asks for a wider scope;
	// otherwise it takes a token from the client's bucket and rotates the family to
	// the next token. It returns the family as it was stored.
	Refresh(ctx context.Context, r Rotation) (Family, *Error)
	// Problem says why the state cannot be used now ("" when it can), for /readyz.
	Problem() string
}

// Admission is one grant to admit.
type Admission struct {
	ClientID string
	Now      time.Time
	// Digest is the assertion to remember until ReplayUntil (nil for a client secret:
	// nothing to replay-check). Code is the error code of a replay.
	Digest      *Digest
	ReplayUntil time.Time
	Code        string
	// Family, when set, is the refresh-token family the grant starts.
	Family *Family
}

// Family is a refresh-token family: the tokens that descend, one rotation at a time,
// from one grant. Only the SHA-256 of its current token is stored.
type Family struct {
	ID       string
	ClientID string
	// Binding is what the family dies with besides its ServiceKey: the key ID that
	// signed the grant, or the client secret's binding (secretBinding) for a grant
	// made with the client secret.
	Binding string
	// UID and Generation are the ServiceKey's when the family started: one created
	// again under the name, or any change to the spec, ends the family.
	UID        types.UID
	Generation int64
	// Scope is what the grant was given; a refresh may narrow it, never widen it.
	Scope   string
	Expires time.Time
	// Current is the SHA-256 of the family's current refresh token.
	Current Digest
}

// Rotation is one refresh to judge.
type Rotation struct {
	ClientID, FamilyID string
	// Presented is the SHA-256 of the token sent; Next that of the token to return.
	Presented, Next Digest
	// UID and Generation are the ServiceKey's as this replica knows it now: a family
	// of an earlier generation is dead, one of a later generation is answered 503
	// (this replica has not seen the change yet). Bindings are the key IDs (and the
	// client secret's binding) usable now and allowed by policy: a family bound to
	// anything else is dead.
	UID        types.UID
	Generation int64
	Bindings   []string
	// Scope is the scope asked for ("" for the family's).
	Scope string
	Now   time.Time
}

// Rate is a per-client rate limit: PerSecond token requests (0: no limit) with Burst.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Refresh-token refusals, the same whichever State answers.
func errRefreshUnknown() *Error {
	return newError(CodeInvalidGrant, "the refresh token is not valid (unknown, expired or revoked); sign a new assertion")
}

func errRefreshReused() *Error {
	return newError(CodeInvalidGrant, "the refresh token was already used, so its whole family is revoked (RFC 9700 section 4.14.2); sign a new assertion")
}

func errRefreshKeyGone(clientID string) *Error {
	e := newError(CodeInvalidGrant, "the key, client secret or spec that got this refresh token is no longer current for "+clientID+
		" (the key rotated past its grace period, the spec changed, or a policy refuses the key); sign a new assertion with the key the Secret holds now")
	e.familyEnded = true
	return e
}

func errRefreshScope(scope string) *Error {
	return newError(CodeInvalidScope, "a refresh may only narrow the scope it was granted ("+scope+"); sign a new assertion for a wider scope")
}

// errRefreshLagging answers a refresh of a family started at a generation of the
// ServiceKey this replica has not seen yet; nothing is changed.
func errRefreshLagging() *Error {
	return &Error{Code: CodeTemporarilyUnavailable, Status: http.StatusServiceUnavailable, RetryAfter: time.Second,
		Description: "this token server replica has not yet seen the latest change to the ServiceKey; retry shortly"}
}

func errRateLimited(clientID string, wait time.Duration) *Error {
	return &Error{Code: CodeInvalidRequest, Description: "too many token requests for " + clientID +
		"; reuse tokens until they expire", Status: http.StatusTooManyRequests, RetryAfter: wait}
}

func errReplayShareFull(clientID string, perClient int, wait time.Duration) *Error {
	return &Error{Code: CodeInvalidRequest, Status: http.StatusTooManyRequests, RetryAfter: wait,
		Description: clientID + " holds " + strconv.Itoa(perClient) + " unexpired assertions, its share of the replay cache; " +
			"sign shorter-lived assertions or reuse access tokens until they expire"}
}

// errStateUnavailable answers a grant that needs the shared state while it cannot be
// reached: fail closed, nothing accepted that a replica could not check.
func errStateUnavailable() *Error {
	return &Error{Code: CodeTemporarilyUnavailable, Status: http.StatusServiceUnavailable, RetryAfter: 2 * time.Second,
		Description: "the token server cannot reach its shared state (Redis), which replay protection needs; retry shortly"}
}

// errStateRefused answers a grant whose script Redis refused (an error reply: out of
// memory under noeviction, a wrong password, an ACL without EVALSHA).
func errStateRefused() *Error {
	return &Error{Code: CodeTemporarilyUnavailable, Status: http.StatusServiceUnavailable, RetryAfter: 2 * time.Second,
		Description: "the token server's shared state (Redis) refused the request; retry later (the token server log says why)"}
}

// narrows says whether every scope-token of requested is in granted.
func narrows(requested, granted string) bool {
	have := strings.Fields(granted)
	for _, s := range strings.Fields(requested) {
		if !slices.Contains(have, s) {
			return false
		}
	}
	return true
}

// closeAfter closes a state that holds connections (Redis) once the listeners are shut
// down and the requests in flight answered, not when ctx is done: a drained replica
// still answers those for up to ShutdownTimeout. Without listeners, at once.
func closeAfter(ctx context.Context, state State, running *Running) {
	closer, ok := state.(io.Closer)
	switch {
	case !ok:
	case running == nil:
		_ = closer.Close()
	default:
		go func() {
			<-ctx.Done()
			running.Wait()
			_ = closer.Close()
		}()
	}
}

// newState is the State the options ask for: Redis, probed until ctx is done and
// exported as servicekey_shared_state_up, or this replica's memory, which forgets a
// deleted ServiceKey's bucket and families (in Redis they expire by themselves).
func newState(ctx context.Context, o Options, reg prometheus.Registerer, ix *Index) (State, error) {
	families := cmp.Or(o.RefreshFamiliesPerClient, DefaultFamiliesPerClient)
	if o.SharedState == "" {
		m := NewMemoryState(NewReplayCache(o.ReplayCacheSize, o.ReplayPerClient), NewLimiter(o.RateLimit, o.RateBurst), families)
		ix.OnDelete(m.Forget)
		return m, nil
	}
	rs, err := NewRedisState(RedisOptions{URL: o.SharedState, Password: o.SharedStatePassword, Rate: Rate{PerSecond: o.RateLimit, Burst: o.RateBurst},
		ReplayPerClient: o.ReplayPerClient, FamiliesPerClient: families, Issuer: o.Issuer, PoolSize: o.MaxInFlight,
		Log: o.Log.WithName("shared-state")})
	if err != nil {
		return nil, err
	}
	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "servicekey_shared_state_up",
		Help: "1 while the shared state (Redis) answers, 0 while grants are refused with 503 because it does not."},
		func() float64 {
			if rs.Problem() != "" {
				return 0
			}
			return 1
		})
	if err := reg.Register(up); err != nil {
		return nil, fmt.Errorf("register shared state metric: %w", err)
	}
	go rs.Run(ctx) // Start closes rs once the listeners are shut down
	o.Log.Info("replay cache, rate limits and refresh tokens are shared in Redis", "redis", rs.Addr())
	return rs, nil
}
