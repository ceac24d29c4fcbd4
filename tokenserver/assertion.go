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
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// AllowedAlgorithms are the JWS algorithms a grant may be signed with: the RSA family
// only (RFC 7518 §3.3, §3.5). Never "none" and never HMAC, so a public key can never
// be used as an HMAC secret (RFC 8725 §2.1, §3.1).
var AllowedAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

// AssertionPolicy is the server-wide part of assertion validation.
type AssertionPolicy struct {
	// Audiences are the accepted `aud` values: the token endpoint URL(s) and the
	// issuer (RFC 7523 §3, item 3).
	Audiences []string
	// MaxLifetime bounds exp - iat (DESIGN.md: 1h).
	MaxLifetime time.Duration
	// Leeway is the clock skew allowed for iat, nbf and exp (DESIGN.md: 60s).
	Leeway time.Duration
}

// Lookup finds the record of a client_id.
type Lookup interface {
	Record(clientID string) (*KeyRecord, bool)
}

// AssertionClaims are the claims of a grant or client assertion (RFC 7523 §3), plus
// the `scope` claim that Google-style clients send instead of a form parameter.
type AssertionClaims struct {
	jwt.RegisteredClaims
	Scope string `json:"scope,omitempty"`
}

// Verified is a grant or client assertion that passed every check.
type Verified struct {
	Record *KeyRecord
	KeyID  string
	Claims AssertionClaims
}

// VerifyAssertion checks a JWT assertion (RFC 7523 §3) at now: structure, algorithm,
// issuer (= client_id), the ServiceKey's state, the signature against the key's
// usable public keys (by `kid`, or each in turn without one), and the claims checks.
// code is the error code for a bad assertion: invalid_grant for the jwt-bearer grant
// (§3.1), invalid_client for client authentication (§3.2). Replay (jti) is checked by
// the caller, which owns the replay cache.
func VerifyAssertion(raw string, now time.Time, p AssertionPolicy, lookup Lookup, code string) (*Verified, *Error) {
	var claims AssertionClaims
	var rec *KeyRecord
	var kid string
	var keys jwt.VerificationKeySet
	var refused *Error
	// One parse: golang-jwt decodes header and claims, then asks the keyfunc for the
	// keys; the keyfunc finds the ServiceKey and decides which keys may verify.
	keyfunc := func(t *jwt.Token) (any, error) {
		if !slices.Contains(AllowedAlgorithms, t.Method.Alg()) {
			refused = newError(code, "the assertion is signed with "+safe(t.Method.Alg())+"; allowed: "+strings.Join(AllowedAlgorithms, ", "))
			return nil, errRefused
		}
		if rec, refused = findRecord(claims.Issuer, now, lookup, code); refused != nil {
			return nil, errRefused
		}
		kid, _ = t.Header["kid"].(string)
		var e *Error
		if keys, e = verificationKeys(rec, kid, now, code); e != nil {
			refused = e
			return nil, errRefused
		}
		return keys, nil
	}
	tok, err := assertionParser.ParseWithClaims(raw, &claims, keyfunc)
	switch {
	case refused != nil:
		return nil, refused
	case err != nil && rec != nil && (errors.Is(err, jwt.ErrTokenSignatureInvalid) || errors.Is(err, jwt.ErrTokenUnverifiable)):
		return nil, newError(code, "the assertion's signature does not verify with the key(s) of "+rec.ClientID)
	case err != nil || !tok.Valid:
		return nil, newError(code, "the assertion is not a well-formed JWT")
	}
	checks := grantChecks
	if code == CodeInvalidClient {
		checks = clientAuthChecks
	}
	for _, check := range checks {
		if why := check(&claims, rec, now, p); why != "" {
			return nil, newError(code, why)
		}
	}
	return &Verified{Record: rec, KeyID: keyIDOf(kid, keys), Claims: claims}, nil
}

// assertionParser decodes and verifies; the claims are checked by the named checks
// below. A jwt.Parser holds only options, so one serves every request.
var assertionParser = jwt.NewParser(jwt.WithoutClaimsValidation())

// errRefused tells the parser to stop; the reason is in the keyfunc's *Error.
var errRefused = errors.New("refused")

// findRecord looks the issuer up and checks that its ServiceKey accepts grants.
func findRecord(iss string, now time.Time, lookup Lookup, code string) (*KeyRecord, *Error) {
	if iss == "" {
		return nil, newError(code, "the assertion has no iss claim; it must be the client_id (<namespace>/<name>)")
	}
	rec, ok := lookup.Record(iss)
	if !ok {
		return nil, newError(code, "unknown client_id "+safe(iss)+" in iss")
	}
	if why := rec.refusal(now); why != "" {
		return nil, newError(code, why)
	}
	return rec, nil
}

// verificationKeys picks the keys to try: the one named by kid, or all usable keys.
func verificationKeys(rec *KeyRecord, kid string, now time.Time, code string) (jwt.VerificationKeySet, *Error) {
	usable := rec.usableKeys(now)
	var set jwt.VerificationKeySet
	for _, k := range usable {
		if kid == "" || k.ID == kid {
			set.Keys = append(set.Keys, k.Key)
		}
	}
	if len(set.Keys) == 0 {
		if kid != "" {
			return set, newError(code, "kid "+safe(kid)+" is not a usable key of "+rec.ClientID+
				" (unknown, or retired after its grace period)")
		}
		return set, newError(code, rec.ClientID+" has no usable key")
	}
	return set, nil
}

// keyIDOf names the key that verified: the kid, or the only candidate.
func keyIDOf(kid string, set jwt.VerificationKeySet) string {
	if kid != "" || len(set.Keys) != 1 {
		return kid
	}
	return ""
}

// claimCheck is one rule of RFC 7523 §3 (or of this server's policy); it returns why
// the claims fail it, or "".
type claimCheck func(c *AssertionClaims, rec *KeyRecord, now time.Time, p AssertionPolicy) string

// grantChecks run in order on a jwt-bearer grant (RFC 7523 §2.1); the first failure
// is the answer. clientAuthChecks are the same for a client assertion (§2.2), whose
// sub must be the client_id (§3, item 2.B).
var (
	grantChecks      = []claimCheck{expRequired, notExpired, iatRequired, iatNotInFuture, lifetimeBounded, notBefore, audienceAccepted, subjectMatches}
	clientAuthChecks = []claimCheck{expRequired, notExpired, iatRequired, iatNotInFuture, lifetimeBounded, notBefore, audienceAccepted, subjectIsClientID}
)

func expRequired(c *AssertionClaims, _ *KeyRecord, _ time.Time, _ AssertionPolicy) string {
	if c.ExpiresAt == nil {
		return "the assertion has no exp claim (RFC 7523 §3, item 4)"
	}
	return ""
}

func notExpired(c *AssertionClaims, _ *KeyRecord, now time.Time, p AssertionPolicy) string {
	if !now.Before(c.ExpiresAt.Add(p.Leeway)) {
		return "the assertion expired at " + c.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return ""
}

func iatRequired(c *AssertionClaims, _ *KeyRecord, _ time.Time, _ AssertionPolicy) string {
	if c.IssuedAt == nil {
		return "the assertion has no iat claim; it is required to bound the assertion's lifetime"
	}
	return ""
}

func iatNotInFuture(c *AssertionClaims, _ *KeyRecord, now time.Time, p AssertionPolicy) string {
	if c.IssuedAt.After(now.Add(p.Leeway)) {
		return "the assertion's iat is in the future (beyond the allowed clock skew); check the client's clock"
	}
	return ""
}

func lifetimeBounded(c *AssertionClaims, _ *KeyRecord, _ time.Time, p AssertionPolicy) string {
	if c.ExpiresAt.Sub(c.IssuedAt.Time) > p.MaxLifetime {
		return "the assertion's lifetime (exp - iat) exceeds " + p.MaxLifetime.String()
	}
	return ""
}

func notBefore(c *AssertionClaims, _ *KeyRecord, now time.Time, p AssertionPolicy) string {
	if c.NotBefore != nil && c.NotBefore.After(now.Add(p.Leeway)) {
		return "the assertion is not valid before " + c.NotBefore.UTC().Format(time.RFC3339) + " (nbf)"
	}
	return ""
}

func audienceAccepted(c *AssertionClaims, _ *KeyRecord, _ time.Time, p AssertionPolicy) string {
	if len(c.Audience) == 0 {
		return "the assertion has no aud claim; it must be the token endpoint URL (RFC 7523 §3, item 3)"
	}
	for _, a := range c.Audience {
		if slices.Contains(p.Audiences, a) {
			return ""
		}
	}
	return "the assertion's aud does not name this server; use the token endpoint URL " + p.Audiences[0]
}

func subjectMatches(c *AssertionClaims, rec *KeyRecord, _ time.Time, _ AssertionPolicy) string {
	if c.Subject != "" && c.Subject != rec.Subject {
		return "the assertion's sub does not match the subject of " + rec.ClientID
	}
	return ""
}

func subjectIsClientID(c *AssertionClaims, rec *KeyRecord, _ time.Time, _ AssertionPolicy) string {
	if c.Subject != rec.ClientID {
		return "a client assertion's sub must be the client_id " + rec.ClientID + " (RFC 7523 §3)"
	}
	return ""
}

// safe shortens and sanitises a client-supplied value for an error description:
// RFC 6749 §5.2 allows printable ASCII except '"' and '\'.
func safe(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '?'
		}
		return r
	}, s)
}
