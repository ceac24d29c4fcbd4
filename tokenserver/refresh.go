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
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	"github.com/servicekey-operator/servicekey-operator/api/policy"
)

// GrantTypeRefreshToken is RFC 6749 §6's grant type.
const GrantTypeRefreshToken = "refresh_token"

// Refresh tokens are opaque to clients: "<client_id>.<family>.<secret>", each part
// base64url. The client ID says which ServiceKey to judge before the shared state is
// asked (one round trip); the family ID (128 bits) names the family; the secret (256
// random bits, RFC 9700 §4.14) is what makes the token a credential. Only the SHA-256
// of the whole token is stored.
const (
	familyIDBytes     = 16
	refreshSecretSize = 32
)

// RefreshDigest is what the state keeps of a refresh token.
func RefreshDigest(token string) Digest { return sha256.Sum256([]byte("refresh\x00" + token)) }

// secretBinding binds a family started with the client secret to that secret: a new
// secret (or secrets turned off) ends it.
func secretBinding(hash string) string {
	if hash == "" {
		return ""
	}
	return "secret:" + hash
}

// newFamily starts a refresh-token family for a grant of rec, and returns it with its
// first token; nil and "" when rec has no refresh tokens.
func (x *Exchanger) newFamily(rec *KeyRecord, binding string, scopes []string, now time.Time) (*Family, string, error) {
	if rec.RefreshTTL <= 0 || binding == "" {
		return nil, "", nil
	}
	id := make([]byte, familyIDBytes)
	if _, err := io.ReadFull(x.random(), id); err != nil {
		return nil, "", fmt.Errorf("refresh-token family ID: %w", err)
	}
	f := &Family{ID: base64.RawURLEncoding.EncodeToString(id), ClientID: rec.ClientID, Binding: binding, UID: rec.UID, Generation: rec.Generation,
		Scope: strings.Join(scopes, " "), Expires: now.Add(rec.RefreshTTL)}
	token, err := x.refreshToken(f.ClientID, f.ID)
	if err != nil {
		return nil, "", err
	}
	f.Current = RefreshDigest(token)
	return f, token, nil
}

// refreshToken is a new token of family id.
func (x *Exchanger) refreshToken(clientID, id string) (string, error) {
	secret := make([]byte, refreshSecretSize)
	if _, err := io.ReadFull(x.random(), secret); err != nil {
		return "", fmt.Errorf("refresh token: %w", err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(clientID)) + "." + id + "." + enc.EncodeToString(secret), nil
}

func (x *Exchanger) random() io.Reader {
	if x.Random != nil {
		return x.Random
	}
	return rand.Reader
}

// parseRefreshToken reads the client ID and family ID of a token of this server.
func parseRefreshToken(token string) (clientID, familyID string, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", "", false
	}
	enc := base64.RawURLEncoding
	id, err := enc.DecodeString(parts[0])
	fam, err2 := enc.DecodeString(parts[1])
	secret, err3 := enc.DecodeString(parts[2])
	if err != nil || err2 != nil || err3 != nil || len(fam) != familyIDBytes || len(secret) != refreshSecretSize {
		return "", "", false
	}
	return string(id), parts[1], true
}

// RefreshRequest is a grant_type=refresh_token request (RFC 6749 §6): the token, the
// scope asked for, and the client authentication sent (ClientID from Basic or the
// form; Secret with HasSecret when a client secret was sent).
type RefreshRequest struct {
	Token, Scope, ClientID, Secret string
	HasSecret                      bool
	ClientAddr                     netip.Addr
}

// ExchangeRefresh exchanges a refresh token for an access token and the family's next
// refresh token. The ServiceKey is judged first, as for any grant: a family whose key
// is suspended, being deleted, expired or refused by policy is ended, not only
// refused. Until the state has confirmed that the caller holds the family's current
// token, a refusal says nothing about the key (the caller may be probing client IDs):
// it reads as an unknown token, and the audit line has the reason.
func (x *Exchanger) ExchangeRefresh(rr RefreshRequest) (*TokenResponse, Outcome, *Error) {
	now := x.Clock.Now()
	clientID, familyID, ok := parseRefreshToken(rr.Token)
	if !ok {
		return nil, Outcome{}, errRefreshUnknown()
	}
	if rr.ClientID != "" && rr.ClientID != clientID {
		return nil, Outcome{}, newError(CodeInvalidGrant, "the refresh token was not issued to this client_id")
	}
	rec, known := x.Lookup.Record(clientID)
	var out Outcome
	if known {
		out = Outcome{ClientID: rec.ClientID, Subject: rec.Subject}
	} else {
		// Judged like a key without refresh tokens, the state asked all the same: an
		// unknown client_id answers as a known one would, at the same cost.
		rec = &KeyRecord{ClientID: clientID}
	}
	if e := refreshClientAuth(rec, rr); e != nil {
		return nil, out, e
	}
	keys := x.Keys()
	if keys == nil {
		return nil, out, errNoSigningKeys()
	}
	if e := refreshRequestRefusal(rec, rr); e != nil { // this request only: the family stays
		return nil, out, concealed(errRefreshUnknown(), e)
	}
	final, denied, retry := x.refreshRefusal(rec, now)
	if retry != nil {
		return nil, out, retry // nothing changed: the client retries with the same token
	}
	rot := Rotation{ClientID: rec.ClientID, FamilyID: familyID, Presented: RefreshDigest(rr.Token),
		UID: rec.UID, Generation: rec.Generation, Scope: rr.Scope, Now: now}
	if final == nil {
		rot.Bindings = x.bindings(rec, now)
	}
	next, err := x.refreshToken(rec.ClientID, familyID)
	if err != nil {
		return nil, out, errServer("could not create a refresh token")
	}
	rot.Next = RefreshDigest(next)
	f, e := x.State.Refresh(context.Background(), rot) // with no bindings, a held family is ended
	switch {
	case final != nil && e != nil && e.familyEnded: // the caller held it: say why
		out.Denied = denied
		return nil, out, final
	case final != nil && e != nil:
		return nil, out, concealed(e, final)
	case final != nil: // no State may let a dead key refresh
		return nil, out, concealed(errRefreshUnknown(), final)
	case e != nil:
		return nil, out, e
	}
	return x.refreshed(keys, rec, out, f, rr.Scope, next, now)
}

// concealed is answer, with the audit line saying why: reason.
func concealed(answer, reason *Error) *Error {
	e := *answer
	e.Reason = reason.auditReason()
	return &e
}

// refreshRequestRefusal is what refuses this request but not the family: the client
// address (spec.allowedCIDRs) and a scope the key does not hold now.
func refreshRequestRefusal(rec *KeyRecord, rr RefreshRequest) *Error {
	if e := addrCheck(rec, rr.ClientAddr); e != nil {
		return e
	}
	if rr.Scope != "" {
		if _, e := grantedScopes(rr.Scope, rec.Scopes); e != nil {
			return e
		}
	}
	return nil
}

// refreshRefusal says why the key can no longer refresh anything (final: its families
// end), or that it cannot now (retry: a 503 that changes nothing).
func (x *Exchanger) refreshRefusal(rec *KeyRecord, now time.Time) (final *Error, denied []policy.Kind, retry *Error) {
	if rec.RefreshTTL <= 0 {
		return newError(CodeInvalidGrant, "refresh tokens are not enabled for "+rec.ClientID+" (spec.refreshTokens); sign a new assertion"), nil, nil
	}
	if why := rec.refusal(now); why != "" {
		return newError(CodeInvalidGrant, why+"; its refresh tokens are ended"), nil, nil
	}
	e, denied := x.Policies.Check(rec, nil)
	if e != nil && e.Status == http.StatusServiceUnavailable {
		return nil, nil, e
	}
	return e, denied, nil
}

// bindings are what a family of rec may be bound to now: its usable keys that the
// policies' minKeySize admits (the verdict is cached per record), and its client secret.
func (x *Exchanger) bindings(rec *KeyRecord, now time.Time) []string {
	var out []string
	minBits := int(x.Policies.Verdict(rec).MinKeySize)
	for _, k := range rec.usableKeys(now) {
		if k.Key.N.BitLen() >= minBits {
			out = append(out, k.ID)
		}
	}
	if b := secretBinding(rec.ClientSecretHash); b != "" {
		out = append(out, b)
	}
	return out
}

// refreshed mints the access token of a rotated family: the scope asked for (the
// state checked it narrows the family's), or the family's. The key's scopes cannot
// have changed since the family started: that would be a new generation.
func (x *Exchanger) refreshed(keys *SigningKeys, rec *KeyRecord, out Outcome, f Family, requested, next string, now time.Time) (*TokenResponse, Outcome, *Error) {
	scopes, e := grantedScopes(cmp.Or(requested, f.Scope), rec.Scopes)
	if e != nil {
		return nil, out, e
	}
	if !strings.HasPrefix(f.Binding, "secret:") {
		out.KeyID = f.Binding
	}
	out.Scopes = scopes
	resp, err := x.mint(keys, rec, out.KeyID, scopes, now)
	if err != nil {
		return nil, out, errServer("could not sign the access token")
	}
	resp.RefreshToken = next
	x.Used.Note(rec.ClientID)
	return resp, out, nil
}

// refreshClientAuth applies RFC 6749 §6: a key with a client secret is a confidential
// client and must authenticate with it; a key without one sends no secret, and a
// client_id, when sent, must be the token's (checked before). Failures read alike (the
// audit line has the reason), as for client_credentials.
func refreshClientAuth(rec *KeyRecord, rr RefreshRequest) *Error {
	reason := ""
	switch {
	case rec.ClientSecretHash != "" && !keyutil.ClientSecretMatches(rr.Secret, rec.ClientSecretHash):
		reason = rec.ClientID + " has a client secret, and the refresh did not authenticate with it"
	case rec.ClientSecretHash == "" && rr.HasSecret:
		reason = "client secrets are not enabled for " + rec.ClientID + "; a refresh sends the refresh token without one"
	default:
		return nil
	}
	e := newError(CodeInvalidClient, "client authentication failed: unknown client_id, client secrets not enabled for it, or wrong secret")
	e.Reason, e.Cause = reason, causeBadSecret
	return e
}
