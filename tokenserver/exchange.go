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
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/utils/clock"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	"github.com/servicekey-operator/servicekey-operator/api/policy"
)

// AccessTokenClaims are the claims of an RFC 9068 access token (§2.2).
type AccessTokenClaims struct {
	jwt.RegisteredClaims
	ClientID string `json:"client_id"`
	Scope    string `json:"scope,omitempty"`
	// KeyID is the ServiceKey key that signed the grant, when known: introspection
	// reports tokens of retired keys inactive.
	KeyID string `json:"key_id,omitempty"`
}

// TokenResponse is the RFC 6749 §5.1 success response.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope,omitempty"`
}

// Exchanger turns verified assertions into access tokens. Time and token IDs are
// injected so the whole exchange is deterministic under test.
type Exchanger struct {
	// Issuer is the `iss` of access tokens (RFC 8414 issuer identifier).
	Issuer string
	// DefaultAudience is the `aud` of tokens of ServiceKeys without spec.audiences.
	DefaultAudience []string
	// MaxTTL caps every ServiceKey's accessTokenTTL.
	MaxTTL time.Duration
	// Policy is the assertion policy (audiences, lifetime, leeway).
	Policy AssertionPolicy
	// Lookup finds ServiceKey records by client_id.
	Lookup Lookup
	// Keys returns the current signing keys (they rotate without a restart).
	Keys func() *SigningKeys
	// Replay remembers assertion IDs until they expire.
	Replay *ReplayCache
	// Clock and NewID are injected: time and randomness.
	Clock clock.PassiveClock
	NewID func() string
	// Policies judges each ServiceKey's live spec against the ServiceKeyPolicies at
	// every grant (nil: no policy is known and every grant is refused).
	Policies *PolicyGate
	// Limiter rate-limits each client (nil: no limit); Used records lastUsedTime (nil: off).
	Limiter *Limiter
	Used    *LastUsed
}

// Request is one grant: the assertion, the requested scope (form parameter; empty
// means the assertion's scope claim, then the key's scopes), the client address, and
// the error code for a bad assertion (invalid_grant or invalid_client).
type Request struct {
	Assertion  string
	Scope      string
	ClientAddr netip.Addr
	Code       string
}

// Outcome is what an exchange did, for the audit line: never the assertion or token.
type Outcome struct {
	ClientID, KeyID, Subject string
	Scopes                   []string
	// Denied are the kinds of privilege no policy allows, when policy refused the grant.
	Denied []policy.Kind
}

// Exchange validates the grant and mints the access token.
func (x *Exchanger) Exchange(r Request) (*TokenResponse, Outcome, *Error) {
	now := x.Clock.Now()
	v, e := VerifyAssertion(r.Assertion, now, x.Policy, x.Lookup, r.Code)
	if e != nil {
		return nil, Outcome{}, e
	}
	rec := v.Record
	out := Outcome{ClientID: rec.ClientID, KeyID: v.KeyID, Subject: rec.Subject}
	requested := r.Scope
	if requested == "" {
		requested = v.Claims.Scope
	}
	replay := func() *Error {
		if v.Claims.ID == "" {
			return nil
		}
		return x.Replay.Record(rec.ClientID+"\x00"+v.Claims.ID, v.Claims.ExpiresAt.Add(x.Policy.Leeway), now)
	}
	return x.issue(rec, out, requested, r.ClientAddr, now, verifiedBy(rec, v.KeyID, now), replay)
}

// ExchangeSecret authenticates a client by its client secret (RFC 6749 §2.3.1) and
// issues a token. Unknown client and wrong secret get the same answer, so the
// endpoint cannot be used to probe which client_ids exist.
func (x *Exchanger) ExchangeSecret(clientID, secret, scope string, addr netip.Addr) (*TokenResponse, Outcome, *Error) {
	now := x.Clock.Now()
	rec, ok := x.Lookup.Record(clientID)
	if !ok || !keyutil.ClientSecretMatches(secret, rec.ClientSecretHash) {
		return nil, Outcome{}, newError(CodeInvalidClient, "client authentication failed: unknown client_id, client secrets not enabled for it, or wrong secret")
	}
	out := Outcome{ClientID: rec.ClientID, Subject: rec.Subject}
	if why := rec.refusal(now); why != "" {
		return nil, out, newError(CodeInvalidClient, why)
	}
	return x.issue(rec, out, scope, addr, now, nil, nil)
}

// verifiedBy lists the keys that may have verified a grant: the named one, or, when
// the grant did not say which, every key usable at now.
func verifiedBy(rec *KeyRecord, keyID string, now time.Time) []string {
	if keyID != "" {
		return []string{keyID}
	}
	var ids []string
	for _, k := range rec.usableKeys(now) {
		ids = append(ids, k.ID)
	}
	return ids
}

// issue runs the checks that follow client authentication — source address, rate
// limit, policy (keyIDs: the keys that may have verified the grant), replay (when
// given), scope — and mints the token.
func (x *Exchanger) issue(rec *KeyRecord, out Outcome, requested string, addr netip.Addr, now time.Time, keyIDs []string, replay func() *Error) (*TokenResponse, Outcome, *Error) {
	if !addrAllowed(rec.AllowedCIDRs, addr) {
		return nil, out, newError(CodeUnauthorizedClient, "requests from "+addr.String()+
			" are not allowed for "+rec.ClientID+" (spec.allowedCIDRs)")
	}
	if ok, wait := x.Limiter.Allow(rec.ClientID, now); !ok {
		return nil, out, &Error{Code: CodeInvalidRequest, Description: "too many token requests for " + rec.ClientID +
			"; reuse tokens until they expire", Status: http.StatusTooManyRequests, RetryAfter: wait}
	}
	if e, denied := x.Policies.Check(rec, keyIDs); e != nil {
		out.Denied = denied
		return nil, out, e
	}
	if replay != nil {
		if e := replay(); e != nil {
			return nil, out, e
		}
	}
	scopes, e := grantedScopes(requested, rec.Scopes)
	if e != nil {
		return nil, out, e
	}
	out.Scopes = scopes
	resp, err := x.mint(rec, out.KeyID, scopes, now)
	if err != nil {
		return nil, out, &Error{Code: "server_error", Description: "could not sign the access token", Status: http.StatusInternalServerError}
	}
	x.Used.Note(rec.ClientID)
	return resp, out, nil
}

func (x *Exchanger) mint(rec *KeyRecord, keyID string, scopes []string, now time.Time) (*TokenResponse, error) {
	ttl := rec.AccessTokenTTL
	if ttl <= 0 || ttl > x.MaxTTL {
		ttl = x.MaxTTL
	}
	aud := rec.Audiences
	if len(aud) == 0 {
		aud = x.DefaultAudience
	}
	scope := strings.Join(scopes, " ")
	claims := AccessTokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: x.Issuer, Subject: rec.Subject, Audience: aud,
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)), ID: x.NewID(),
		},
		ClientID: rec.ClientID, Scope: scope, KeyID: keyID,
	}
	tok, err := x.Keys().Sign(claims)
	if err != nil {
		return nil, err
	}
	return &TokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: int64(ttl / time.Second), Scope: scope}, nil
}

// grantedScopes checks the requested scopes (RFC 6749 §3.3, space-delimited) against
// the key's. Omitted scope means the key's scopes: the admin's predefined default.
func grantedScopes(requested string, allowed []string) ([]string, *Error) {
	if requested == "" {
		return allowed, nil
	}
	var out, refused []string
	for _, s := range strings.Fields(requested) {
		if !slices.Contains(allowed, s) {
			refused = append(refused, safe(s))
		} else if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(refused) > 0 {
		return nil, newError(CodeInvalidScope, "scope not allowed for this key: "+strings.Join(refused, " "))
	}
	return out, nil
}

func addrAllowed(cidrs []netip.Prefix, addr netip.Addr) bool {
	if len(cidrs) == 0 {
		return true
	}
	for _, p := range cidrs {
		if p.IsValid() && p.Contains(addr.Unmap()) {
			return true
		}
	}
	return false
}

// ReplayCache remembers assertion IDs (jti) until their assertion expires, so a
// captured assertion cannot be exchanged twice (RFC 7523 §3, item 7). It is bounded:
// when full of unexpired entries it refuses new grants with 503 rather than forget.
type ReplayCache struct {
	mu   sync.Mutex
	seen map[string]time.Time
	max  int
}

// NewReplayCache holds at most max IDs.
func NewReplayCache(maxEntries int) *ReplayCache {
	return &ReplayCache{seen: map[string]time.Time{}, max: maxEntries}
}

// Record stores key until expires; an error says it was seen already, or that the
// cache is full.
func (c *ReplayCache) Record(key string, expires, now time.Time) *Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if until, ok := c.seen[key]; ok && now.Before(until) {
		return newError(CodeInvalidGrant, "the assertion's jti was already used; sign a new assertion for each request")
	}
	if len(c.seen) >= c.max {
		for k, until := range c.seen {
			if !now.Before(until) {
				delete(c.seen, k)
			}
		}
	}
	if len(c.seen) >= c.max {
		return &Error{Code: "temporarily_unavailable", Description: "too many assertions in flight; retry shortly",
			Status: http.StatusServiceUnavailable}
	}
	c.seen[key] = expires
	return nil
}
