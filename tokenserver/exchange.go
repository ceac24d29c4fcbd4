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
	// Replay remembers assertions (by jti, or whole without one) until they expire.
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
	requested, e := requestedScope(r.Scope, v.Claims.Scope)
	if e != nil {
		return nil, out, e
	}
	var d Digest
	if v.Claims.ID != "" {
		d = JTIDigest(v.Claims.ID)
	} else {
		d = AssertionDigest(r.Assertion)
	}
	if x.Replay.Seen(rec.ClientID, d, now) { // before the rate limit: a replay spends nothing
		return nil, out, replayError(r.Code)
	}
	replay := func() *Error {
		return x.Replay.Record(rec.ClientID, d, v.Claims.ExpiresAt.Add(x.Policy.Leeway), now, r.Code)
	}
	return x.issue(rec, out, requested, r.ClientAddr, now, []string{v.KeyID}, replay)
}

// requestedScope is the form's scope, or the assertion's scope claim when the form
// has none. When both are given the form may only narrow the claim: the key holder
// signed for those scopes and no others.
func requestedScope(form, claim string) (string, *Error) {
	if form == "" || claim == "" {
		return form + claim, nil
	}
	signed := strings.Fields(claim)
	var wider []string
	for _, s := range strings.Fields(form) {
		if !slices.Contains(signed, s) {
			wider = append(wider, safe(s))
		}
	}
	if len(wider) > 0 {
		return "", newError(CodeInvalidScope, "scope "+strings.Join(wider, " ")+
			" is not in the assertion's scope claim; the form's scope may only narrow it")
	}
	return form, nil
}

// decoySecretHash is compared against when the client is unknown or has no client
// secret, so that answer costs what a wrong secret costs.
var decoySecretHash = keyutil.HashClientSecret("decoy")

// ExchangeSecret authenticates a client by its client secret (RFC 6749 §2.3.1) and
// issues a token. Unknown client, secrets not enabled and wrong secret get the same
// answer at the same cost, so the endpoint cannot be used to probe which client_ids
// exist.
func (x *Exchanger) ExchangeSecret(clientID, secret, scope string, addr netip.Addr) (*TokenResponse, Outcome, *Error) {
	now := x.Clock.Now()
	rec, ok := x.Lookup.Record(clientID)
	hash, reason := decoySecretHash, "unknown client_id "+loggableID(clientID)
	if ok && rec.ClientSecretHash != "" {
		hash, reason = rec.ClientSecretHash, "wrong client secret for "+rec.ClientID
	} else if ok {
		reason = "client secrets are not enabled for " + rec.ClientID
	}
	if !keyutil.ClientSecretMatches(secret, hash) || hash == decoySecretHash {
		e := newError(CodeInvalidClient, "client authentication failed: unknown client_id, client secrets not enabled for it, or wrong secret")
		e.Reason, e.Cause = reason, causeBadSecret
		return nil, Outcome{}, e
	}
	out := Outcome{ClientID: rec.ClientID, Subject: rec.Subject}
	if why := rec.refusal(now); why != "" {
		return nil, out, newError(CodeInvalidClient, why)
	}
	return x.issue(rec, out, scope, addr, now, nil, nil)
}

// issue runs the checks that follow client authentication — source address, rate
// limit, policy (keyIDs: the keys that may have verified the grant), replay (when
// given), scope — and mints the token.
func (x *Exchanger) issue(rec *KeyRecord, out Outcome, requested string, addr netip.Addr, now time.Time, keyIDs []string, replay func() *Error) (*TokenResponse, Outcome, *Error) {
	keys := x.Keys()
	if keys == nil { // deleted while this request was being judged
		return nil, out, errNoSigningKeys()
	}
	if !addrAllowed(rec.AllowedCIDRs, addr) {
		if !addr.IsValid() {
			return nil, out, newError(CodeUnauthorizedClient, "the client address is unknown (a trusted proxy sent no usable "+
				"X-Forwarded-For), so spec.allowedCIDRs of "+rec.ClientID+" cannot admit the request")
		}
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
	resp, err := x.mint(keys, rec, out.KeyID, scopes, now)
	if err != nil {
		return nil, out, &Error{Code: "server_error", Description: "could not sign the access token", Status: http.StatusInternalServerError}
	}
	x.Used.Note(rec.ClientID)
	return resp, out, nil
}

func (x *Exchanger) mint(keys *SigningKeys, rec *KeyRecord, keyID string, scopes []string, now time.Time) (*TokenResponse, error) {
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
	tok, err := keys.Sign(claims)
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
	if len(strings.Fields(requested)) == 0 {
		return nil, newError(CodeInvalidScope, "the scope has no scope-token (RFC 6749 section 3.3); omit it to get the key's scopes")
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
