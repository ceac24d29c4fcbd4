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
	"crypto/rsa"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/servicekey-operator/servicekey-operator/api/josecheck"
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
	// MaxLifetime bounds exp - iat (1h: the assertion rules of docs/tokenserver.md).
	MaxLifetime time.Duration
	// Leeway is the clock skew allowed for iat, nbf and exp (60s: the assertion rules
	// of docs/tokenserver.md).
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
	// KeyID is the key whose signature verified: the kid, or, for a grant without
	// kid, the one usable key that matched.
	KeyID  string
	Claims AssertionClaims
}

// Causes of an unauthenticated refusal, for the audit line and the metric: the
// caller is answered one generic description for all of them.
const (
	causeUnknownClient = "unknown_client"
	causeKeyNotUsable  = "key_not_usable"
	causeBadSignature  = "bad_signature"
	causeBadSecret     = "bad_secret"
)

// GenericAssertionRefusal is all an unauthenticated caller learns: whether a client
// exists, which of its keys are valid, or why its signature failed is told only to
// the audit log, so the endpoint cannot be used to enumerate ServiceKeys or key IDs.
const GenericAssertionRefusal = "the assertion's issuer, key or signature is not valid here; check that the key file is current"

// unauthenticated is a refusal before the caller proved it holds a key: generic to
// the caller, precise in the audit line (Reason) and metrics (Cause).
func unauthenticated(code, reason, cause string) *Error {
	e := newError(code, GenericAssertionRefusal)
	e.Reason, e.Cause = reason, cause
	return e
}

// VerifyAssertion checks a JWT assertion (RFC 7523 §3) at now: structure, header
// (algorithm, RFC 7515 §4.1 parameters, typ), issuer (= client_id), the signature
// key by key against the ServiceKey's usable public keys (the kid's, or each in turn
// without one), then — the caller now authenticated — the ServiceKey's state and the
// claims checks. code is the error code for a bad assertion: invalid_grant for the
// jwt-bearer grant (§3.1), invalid_client for client authentication (§3.2). Replay
// (jti) is checked by the caller, which owns the replay cache.
func VerifyAssertion(raw string, now time.Time, p AssertionPolicy, lookup Lookup, code string) (*Verified, *Error) {
	var claims AssertionClaims
	if !josecheck.Compact(raw) {
		return nil, newError(code, "the assertion is not a well-formed JWT")
	}
	tok, parts, err := assertionParser.ParseUnverified(raw, &claims)
	if err != nil {
		return nil, newError(code, "the assertion is not a well-formed JWT")
	}
	if !slices.Contains(AllowedAlgorithms, tok.Method.Alg()) {
		return nil, newError(code, "the assertion is signed with "+safe(tok.Method.Alg())+"; allowed: "+strings.Join(AllowedAlgorithms, ", "))
	}
	if why := josecheck.Check(tok.Header, assertionHeaderRules); why != "" {
		return nil, newError(code, why)
	}
	if !josecheck.ValidUTF8(raw) {
		return nil, newError(code, "the assertion's header or claims are not UTF-8 (RFC 8725 section 3.7)")
	}
	kid, _ := tok.Header["kid"].(string)
	rec, keys, e := candidates(claims.Issuer, kid, now, lookup, code)
	if e != nil {
		if e.Cause != "" {
			burnVerification(tok, parts) // as costly as a known client's answer
		}
		return nil, e
	}
	keyID, ok := verifyKeyByKey(tok, parts, keys)
	if !ok {
		return nil, unauthenticated(code, "the assertion's signature does not verify with the key(s) of "+rec.ClientID, causeBadSignature)
	}
	if why := rec.refusal(now); why != "" {
		return nil, newError(code, why)
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
	return &Verified{Record: rec, KeyID: keyID, Claims: claims}, nil
}

// assertionParser decodes; the signature and claims are checked by the code above.
// Strict base64 refuses stray bits, and josecheck.Compact refuses anything outside
// the base64url alphabet (the decoders skip CR and LF). A jwt.Parser holds only
// options, so one serves every request.
var assertionParser = jwt.NewParser(jwt.WithoutClaimsValidation(), jwt.WithStrictDecoding())

// assertionHeaderRules: RFC 7515 §4.1 and RFC 8725 §3; typ, when present, is JWT.
var assertionHeaderRules = josecheck.Rules(false, josecheck.TypJWT)

// candidates finds the issuer's record and the keys that may verify: the one named
// by kid, or every usable key. Nothing here is told to the caller.
func candidates(iss, kid string, now time.Time, lookup Lookup, code string) (*KeyRecord, []PublicKey, *Error) {
	if iss == "" {
		return nil, nil, newError(code, "the assertion has no iss claim; it must be the client_id (<namespace>/<name>)")
	}
	rec, ok := lookup.Record(iss)
	if !ok {
		return nil, nil, unauthenticated(code, "unknown client_id "+loggableID(iss)+" in iss", causeUnknownClient)
	}
	var keys []PublicKey
	for _, k := range rec.usableKeys(now) {
		if kid == "" || k.ID == kid {
			keys = append(keys, k)
		}
	}
	switch {
	case len(keys) > 0:
		return rec, keys, nil
	case kid != "":
		return nil, nil, unauthenticated(code, "kid "+safe(kid)+" is not a usable key of "+rec.ClientID+
			" (unknown, or retired after its grace period)", causeKeyNotUsable)
	default:
		return nil, nil, unauthenticated(code, rec.ClientID+" has no usable key", causeKeyNotUsable)
	}
}

// verifyKeyByKey checks the signature against each candidate and names the one that
// verified, so a token records its key even when the grant had no kid.
func verifyKeyByKey(tok *jwt.Token, parts []string, keys []PublicKey) (string, bool) {
	signed := parts[0] + "." + parts[1]
	for _, k := range keys {
		if verifyOne(tok.Method, signed, tok.Signature, k.Key) {
			return k.ID, true
		}
	}
	return "", false
}

// verifyOne verifies sig with key at the cost of exactly one modular exponentiation of
// the signature's size, whatever the signature: one of the wrong length for the key,
// or not below its modulus, which crypto/rsa refuses without the exponentiation, costs
// a decoy verification instead. An unknown client or kid costs the same (burnVerification),
// so the answer's time does not tell which ServiceKeys and key IDs exist (RFC 7523 §3
// leaves timing to the server).
func verifyOne(m jwt.SigningMethod, signed string, sig []byte, key *rsa.PublicKey) bool {
	if len(sig) != key.Size() || new(big.Int).SetBytes(sig).Cmp(key.N) >= 0 {
		burn(m, signed, sig)
		return false
	}
	return m.Verify(signed, sig, key) == nil
}

// burnVerification is what an unknown client or kid costs: one decoy verification.
func burnVerification(tok *jwt.Token, parts []string) {
	burn(tok.Method, parts[0]+"."+parts[1], tok.Signature)
}

// burn verifies sig, reduced below the modulus, against the decoy key of the
// signature's size (2048, 3072 or 4096 bits); a signature of any other length has no
// decoy, as a real key refuses it without the exponentiation too.
func burn(m jwt.SigningMethod, signed string, sig []byte) {
	d := decoyKeys[len(sig)*8]
	if d == nil {
		return
	}
	reduced := new(big.Int).Mod(new(big.Int).SetBytes(sig), d.N).FillBytes(make([]byte, len(sig)))
	_ = m.Verify(signed, reduced, d)
}

// decoyKeys are RSA public keys of each size a ServiceKey may have. Only the cost of
// the verification matters, which is that of the modulus size and e = 65537, so the
// modulus is a fixed odd number near the top of its range rather than a generated key:
// nothing to wait for at start, nothing that can fail.
var decoyKeys = func() map[int]*rsa.PublicKey {
	keys := map[int]*rsa.PublicKey{}
	for _, bits := range []int{2048, 3072, 4096} {
		n := new(big.Int).Lsh(big.NewInt(1), uint(bits))
		n.Sub(n, big.NewInt(0x5e1f))
		keys[bits] = &rsa.PublicKey{N: n, E: 65537}
	}
	return keys
}()

// loggableID is a client_id for the audit line: as sent when it has the
// <namespace>/<name> shape, else only its length, so a secret sent in its place (the
// id and secret swapped) never reaches the log.
func loggableID(id string) string {
	ns, name, ok := strings.Cut(id, "/")
	if ok && len(validation.IsDNS1123Label(ns)) == 0 && len(validation.IsDNS1123Subdomain(name)) == 0 {
		return id
	}
	return "(not <namespace>/<name>, " + strconv.Itoa(len(id)) + " bytes)"
}

// claimCheck is one rule of RFC 7523 §3 (or of this server's policy); it returns why
// the claims fail it, or "".
type claimCheck func(c *AssertionClaims, rec *KeyRecord, now time.Time, p AssertionPolicy) string

// grantChecks run in order on a jwt-bearer grant (RFC 7523 §2.1); the first failure
// is the answer. clientAuthChecks are the same for a client assertion (§2.2), whose
// sub must be the client_id (§3, item 2.B).
var (
	grantChecks      = []claimCheck{expRequired, notExpired, iatRequired, iatNotInFuture, lifetimeBounded, notBefore, audienceAccepted, subjectMatches, jtiBounded}
	clientAuthChecks = []claimCheck{expRequired, notExpired, iatRequired, iatNotInFuture, lifetimeBounded, notBefore, audienceAccepted, subjectIsClientID, jtiRequired, jtiBounded}
)

func expRequired(c *AssertionClaims, _ *KeyRecord, _ time.Time, _ AssertionPolicy) string {
	if c.ExpiresAt == nil {
		return "the assertion has no exp claim (RFC 7523 section 3, item 4)"
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
		return "the assertion has no aud claim; it must be the token endpoint URL (RFC 7523 section 3, item 3)"
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
		return "a client assertion's sub must be the client_id " + rec.ClientID + " (RFC 7523 section 3)"
	}
	return ""
}

// jtiRequired: a client assertion must carry a jti (OpenID Connect Core §9: "jti
// REQUIRED"), so every one is single-use.
func jtiRequired(c *AssertionClaims, _ *KeyRecord, _ time.Time, _ AssertionPolicy) string {
	if c.ID == "" {
		return "a client assertion must have a jti claim, a fresh unique ID per assertion (OpenID Connect Core section 9)"
	}
	return ""
}

// jtiBounded: a jti is an identifier, not a payload; the replay cache keeps a digest
// either way, but nothing longer than MaxJTIBytes is hashed or accepted.
func jtiBounded(c *AssertionClaims, _ *KeyRecord, _ time.Time, _ AssertionPolicy) string {
	if len(c.ID) > MaxJTIBytes {
		return "the assertion's jti is longer than " + strconv.Itoa(MaxJTIBytes) + " bytes"
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
