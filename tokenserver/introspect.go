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
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
)

// DefaultIntrospectionScope is the scope a caller's access token needs to introspect.
const DefaultIntrospectionScope = "servicekey:introspect"

// Introspector serves POST /oauth2/introspect (RFC 7662). Callers authenticate with an
// access token of this server carrying Scope, from a ServiceKey that is itself usable:
// admins grant introspection by listing the scope on a ServiceKey, and the token
// server needs no permission beyond what it has. A token is active only while its
// signature, issuer and expiry hold, its ServiceKey exists and accepts grants, and
// the key that signed its grant has not been retired — the revocation that offline
// checks of a JWT cannot give.
//
// A caller learns only about tokens meant for it (RFC 7662 §4): its token's scope
// `<Scope>:<audience>` (servicekey:introspect:https://billing.internal) admits tokens
// whose `aud` contains that audience, and the plain Scope admits tokens addressed to
// the caller itself (its client_id in `aud`; not its subject, which a key's owner may choose). Both are reserved scopes, so
// only a ServiceKeyPolicy naming them exactly grants them: the cluster admin decides
// which introspector sees which audience. Every other token is reported inactive.
// Each caller is rate-limited, and every call is audited.
type Introspector struct {
	Issuer string
	Scope  string
	Keys   func() *SigningKeys
	Lookup Lookup
	// Policies judges the token's ServiceKey now (nil: every token is inactive).
	Policies *PolicyGate
	// DefaultAudience is what tokens of ServiceKeys without spec.audiences carry.
	DefaultAudience []string
	// MaxTTL is the server's cap on access-token lifetimes.
	MaxTTL time.Duration
	Clock  clock.PassiveClock
	// Limiter rate-limits each caller (nil: no limit).
	Limiter *Limiter
	// Log receives one audit line per call: never a token.
	Log logr.Logger
	// InFlight bounds the requests judged at once (nil: no bound).
	InFlight *InFlight
}

// IntrospectionResponse is the RFC 7662 §2.2 response.
type IntrospectionResponse struct {
	Active    bool     `json:"active"`
	Scope     string   `json:"scope,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	TokenType string   `json:"token_type,omitempty"`
	Exp       int64    `json:"exp,omitempty"`
	Iat       int64    `json:"iat,omitempty"`
	Sub       string   `json:"sub,omitempty"`
	Aud       []string `json:"aud,omitempty"`
	Iss       string   `json:"iss,omitempty"`
	Jti       string   `json:"jti,omitempty"`
}

// ServeHTTP implements the endpoint. Every answer is audited.
func (in *Introspector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	caller, resp, outcome, e := in.answer(w, r)
	if e != nil {
		outcome = e.Code
		if e.Status == http.StatusTooManyRequests {
			outcome = "rate_limited"
		}
		in.audit(caller, IntrospectionResponse{}, outcome)
		if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden {
			w.Header().Set("WWW-Authenticate", `Bearer realm="servicekey", error="`+e.Code+`", error_description="`+e.Description+`"`)
		}
		e.Write(w, false)
		return
	}
	in.audit(caller, resp, outcome)
	writeJSON(w, http.StatusOK, resp)
}

// answer judges one call: who the caller is, what it may learn about the token, and
// the outcome for the audit line. A token not meant for the caller is answered like
// an inactive one (outcome not_permitted).
func (in *Introspector) answer(w http.ResponseWriter, r *http.Request) (string, IntrospectionResponse, string, *Error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return "", IntrospectionResponse{}, "", &Error{Code: CodeInvalidRequest, Description: "introspection accepts POST only", Status: http.StatusMethodNotAllowed}
	}
	ks := in.Keys()
	if ks == nil {
		return "", IntrospectionResponse{}, "", errNoSigningKeys()
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
		return "", IntrospectionResponse{}, "", newError(CodeInvalidRequest, "the token parameter is required (RFC 7662 section 2.1)")
	}
	if !in.InFlight.Acquire() {
		return "", IntrospectionResponse{}, "", errBusy()
	}
	defer in.InFlight.Release()
	now := in.Clock.Now()
	caller, audiences, e := in.authorize(r, ks, now)
	if e != nil {
		return caller, IntrospectionResponse{}, "", e
	}
	if ok, wait := in.Limiter.Allow(caller, now); !ok {
		return caller, IntrospectionResponse{}, "", &Error{Code: CodeInvalidRequest, Description: "too many introspection requests from " + caller +
			"; cache answers until the token expires", Status: http.StatusTooManyRequests, RetryAfter: wait}
	}
	resp := in.inspect(r.PostForm.Get("token"), ks, now)
	switch {
	case !resp.Active:
		return caller, resp, "inactive", nil
	case !slices.ContainsFunc(resp.Aud, func(a string) bool { return slices.Contains(audiences, a) }):
		return caller, IntrospectionResponse{}, "not_permitted", nil
	}
	return caller, resp, "active", nil
}

// audit logs one introspection: who asked, about which token (client and jti, never
// the token), and the answer.
func (in *Introspector) audit(caller string, resp IntrospectionResponse, outcome string) {
	in.Log.Info("introspection", "caller", caller, "token_client_id", resp.ClientID, "token_jti", resp.Jti, "outcome", outcome)
}

// audiencesOf are the audiences whose tokens the caller may introspect, from its
// token's scopes (which inspect has just checked against its live spec and policy):
// `<Scope>:<audience>`, and for the plain Scope the caller's own client_id — not its
// subject, which a key's owner may choose within the policy's subject patterns.
func (in *Introspector) audiencesOf(caller IntrospectionResponse) []string {
	var aud []string
	for _, s := range strings.Fields(caller.Scope) {
		if s == in.Scope {
			aud = append(aud, caller.ClientID)
		} else if a, ok := strings.CutPrefix(s, in.Scope+":"); ok && a != "" {
			aud = append(aud, a)
		}
	}
	return aud
}

// authorize checks the caller's bearer token and its introspection scopes, and
// returns the caller's client_id and the audiences it may introspect.
func (in *Introspector) authorize(r *http.Request, ks *SigningKeys, now time.Time) (string, []string, *Error) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || raw == "" {
		return "", nil, &Error{Code: "invalid_token", Description: "introspection needs a bearer access token", Status: http.StatusUnauthorized}
	}
	resp := in.inspect(raw, ks, now)
	if !resp.Active {
		return "", nil, &Error{Code: "invalid_token", Description: "the caller's access token is not active", Status: http.StatusUnauthorized}
	}
	audiences := in.audiencesOf(resp)
	if len(audiences) == 0 {
		return resp.ClientID, nil, &Error{Code: "insufficient_scope", Description: "the caller's token lacks scope " + in.Scope + " (or " + in.Scope + ":<audience>)", Status: http.StatusForbidden}
	}
	return resp.ClientID, audiences, nil
}

// carriesOnlyAllowed says whether everything the token carries is still what its
// ServiceKey's spec asks for and a policy permits now: a scope or audience a policy
// stopped allowing (or the spec dropped), a lifetime longer than the spec's TTL now, or
// a grant key smaller than the permitting policies' minKeySize makes it inactive.
func (in *Introspector) carriesOnlyAllowed(c *AccessTokenClaims, rec *KeyRecord) bool {
	v := in.Policies.Verdict(rec)
	if !v.Allowed || c.Subject != rec.Subject || !in.lifetimeAllowed(c, rec) {
		return false
	}
	if c.KeyID != "" {
		if id, _ := smallKey(rec, []string{c.KeyID}, v.MinKeySize); id != "" {
			return false
		}
	}
	for _, s := range strings.Fields(c.Scope) {
		if !slices.Contains(rec.Scopes, s) {
			return false
		}
	}
	aud := rec.Audiences
	if len(aud) == 0 {
		aud = in.DefaultAudience
	}
	for _, a := range c.Audience {
		if !slices.Contains(aud, a) {
			return false
		}
	}
	return true
}

// lifetimeAllowed: exp - iat within the TTL the token would get now.
func (in *Introspector) lifetimeAllowed(c *AccessTokenClaims, rec *KeyRecord) bool {
	ttl := rec.AccessTokenTTL
	if ttl <= 0 || (in.MaxTTL > 0 && ttl > in.MaxTTL) {
		ttl = in.MaxTTL
	}
	if c.IssuedAt == nil || c.ExpiresAt == nil {
		return false
	}
	return ttl <= 0 || c.ExpiresAt.Sub(c.IssuedAt.Time) <= ttl
}

// inspect decides whether a token is active now.
func (in *Introspector) inspect(raw string, ks *SigningKeys, now time.Time) IntrospectionResponse {
	inactive := IntrospectionResponse{Active: false}
	c, err := ks.Verify(raw, in.Issuer, now)
	if err != nil {
		return inactive
	}
	rec, ok := in.Lookup.Record(c.ClientID)
	if !ok || rec.refusal(now) != "" {
		return inactive
	}
	if c.KeyID != "" && !slices.ContainsFunc(rec.usableKeys(now), func(k PublicKey) bool { return k.ID == c.KeyID }) {
		return inactive
	}
	if !in.carriesOnlyAllowed(c, rec) {
		return inactive
	}
	return IntrospectionResponse{Active: true, Scope: c.Scope, ClientID: c.ClientID, TokenType: "Bearer",
		Exp: c.ExpiresAt.Unix(), Iat: c.IssuedAt.Unix(), Sub: c.Subject, Aud: c.Audience, Iss: c.Issuer, Jti: c.ID}
}
