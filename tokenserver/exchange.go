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
	"io"
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
	// RefreshToken is sent when the ServiceKey has spec.refreshTokens (RFC 6749 §5.1).
	RefreshToken string `json:"refresh_token,omitempty"`
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
	// State remembers used assertions, rate-limit buckets and refresh-token families
	// (MemoryState, or RedisState shared by every replica).
	State State
	// Clock, NewID and Random are injected: time and randomness (Random: nil means
	// crypto/rand), for token IDs and refresh tokens.
	Clock  clock.PassiveClock
	NewID  func() string
	Random io.Reader
	// Policies judges each ServiceKey's live spec against the ServiceKeyPolicies at
	// every grant (nil: no policy is known and every grant is refused).
	Policies *PolicyGate
	// Used records lastUsedTime (nil: off).
	Used *LastUsed
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
	return x.issue(grant{rec: rec, out: out, requested: requested, addr: r.ClientAddr, now: now, keyIDs: []string{v.KeyID},
		binding: v.KeyID, digest: &d, replayUntil: v.Claims.ExpiresAt.Add(x.Policy.Leeway), code: r.Code})
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
	return x.issue(grant{rec: rec, out: out, requested: scope, addr: addr, now: now, binding: secretBinding(rec.ClientSecretHash)})
}

// grant is an authenticated grant for issue: keyIDs are the keys that may have
// verified it (nil for a client secret), binding what a refresh-token family it starts
// dies with, digest the assertion to replay-check (nil for a client secret).
type grant struct {
	rec         *KeyRecord
	out         Outcome
	requested   string
	addr        netip.Addr
	now         time.Time
	keyIDs      []string
	binding     string
	digest      *Digest
	replayUntil time.Time
	code        string
}

// issue runs the checks that follow client authentication — source address, policy,
// scope, then the State's replay check and rate limit in one step — and mints the
// token (with a refresh token when the key has them).
func (x *Exchanger) issue(g grant) (*TokenResponse, Outcome, *Error) {
	rec, out := g.rec, g.out
	keys := x.Keys()
	if keys == nil { // deleted while this request was being judged
		return nil, out, errNoSigningKeys()
	}
	if e := addrCheck(rec, g.addr); e != nil {
		return nil, out, e
	}
	if e, denied := x.Policies.Check(rec, g.keyIDs); e != nil {
		out.Denied = denied
		return nil, out, e
	}
	scopes, e := grantedScopes(g.requested, rec.Scopes)
	if e != nil {
		return nil, out, e
	}
	out.Scopes = scopes
	family, refresh, err := x.newFamily(rec, g.binding, scopes, g.now)
	if err != nil {
		return nil, out, errServer("could not create a refresh token")
	}
	a := Admission{ClientID: rec.ClientID, Now: g.now, Digest: g.digest, ReplayUntil: g.replayUntil, Code: g.code, Family: family}
	if e := x.State.Admit(context.Background(), a); e != nil {
		return nil, out, e
	}
	resp, err := x.mint(keys, rec, out.KeyID, scopes, g.now)
	if err != nil {
		return nil, out, errServer("could not sign the access token")
	}
	resp.RefreshToken = refresh
	x.Used.Note(rec.ClientID)
	return resp, out, nil
}

// errServer is a 500 for what is the server's fault, never the request's.
func errServer(description string) *Error {
	return &Error{Code: "server_error", Description: description, Status: http.StatusInternalServerError}
}

// addrCheck enforces spec.allowedCIDRs.
func addrCheck(rec *KeyRecord, addr netip.Addr) *Error {
	if addrAllowed(rec.AllowedCIDRs, addr) {
		return nil
	}
	if !addr.IsValid() {
		return newError(CodeUnauthorizedClient, "the client address is unknown (a trusted proxy sent no usable "+
			"X-Forwarded-For), so spec.allowedCIDRs of "+rec.ClientID+" cannot admit the request")
	}
	return newError(CodeUnauthorizedClient, "requests from "+addr.String()+
		" are not allowed for "+rec.ClientID+" (spec.allowedCIDRs)")
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
