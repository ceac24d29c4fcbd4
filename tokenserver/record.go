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
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// KeyRecord is what the token server knows about one ServiceKey: everything grant
// validation needs, with public keys parsed once so the request path never parses PEM.
//
// What a token carries (subject, scopes, audiences, lifetime) comes from the spec,
// which policies judge; the status supplies only what can narrow: the public keys
// (authentication, not privileges) and the client secret's hash (gated by the spec
// and policy); conditions are not read (the cache drops them, see SlimServiceKey).
// Nothing in status can widen a token.
type KeyRecord struct {
	UID types.UID
	// ResourceVersion is the ServiceKey's, to tell an unchanged object in a fresh list.
	ResourceVersion string
	// Generation is the ServiceKey's metadata.generation: refresh-token families are
	// bound to it, so any change to the spec ends them.
	Generation int64
	ClientID   string
	// Subject is spec.subject, or the default system:servicekey:<namespace>:<name>.
	Subject        string
	Scopes         []string
	Audiences      []string
	AccessTokenTTL time.Duration
	AllowedCIDRs   []netip.Prefix
	Suspended      bool
	// Deleting: the ServiceKey has a deletionTimestamp. With foreground deletion (or a
	// finalizer) it stays until its Secret is gone; its grants end when the delete is
	// asked for, not when the object finally leaves.
	Deleting bool
	// Expiry is when the ServiceKey stops working; nil means never.
	Expiry *time.Time
	// ClientSecretHash is status.clientSecretHash ("" when client secrets are off).
	ClientSecretHash string
	Keys             []PublicKey
	// RefreshTTL is spec.refreshTokens.ttl: how long a refresh-token family lives
	// (0: refresh tokens are off for this key).
	RefreshTTL time.Duration
	// Request is what ServiceKeyPolicies judge: the live spec.
	Request policy.Request

	// verdict caches the PolicyGate's verdict on this record.
	verdict atomic.Pointer[cachedVerdict]
}

// PublicKey is one verification key of a ServiceKey.
type PublicKey struct {
	ID  string
	Key *rsa.PublicKey
	// NotAfter is when the key stops being accepted (a Retiring key's grace end); nil: no end.
	NotAfter *time.Time
	Active   bool
}

// KeyParser turns a status PEM into a key; the index memoises it per key ID.
type KeyParser func(id, pem string) (*rsa.PublicKey, error)

// ParsePublicKey is the uncached KeyParser. It checks that id is the key's RFC 7638
// thumbprint, so a status whose keyID and PEM disagree can never bind a kid to
// another key.
func ParsePublicKey(id string, pem string) (*rsa.PublicKey, error) {
	pub, err := keyutil.ParsePublicKey([]byte(pem))
	if err != nil {
		return nil, err
	}
	if got, err := keyutil.KeyID(pub); err != nil || got != id {
		return nil, fmt.Errorf("keyID %s is not the thumbprint of its public key", id)
	}
	return pub, nil
}

// NewKeyRecord derives the record of a ServiceKey. Keys that do not parse are left
// out (they cannot verify anything), and reported in the error for the index to log.
func NewKeyRecord(sk *v1.ServiceKey, parse KeyParser) (*KeyRecord, error) {
	r := &KeyRecord{
		UID:             sk.UID,
		ResourceVersion: sk.ResourceVersion,
		Generation:      sk.Generation,
		ClientID:        v1.ClientID(sk.Namespace, sk.Name),
		Subject:         sk.Spec.Subject,
		Scopes:          sk.Spec.Scopes,
		Audiences:       sk.Spec.Audiences,
		Suspended:       sk.Spec.Suspended,
		Deleting:        sk.DeletionTimestamp != nil,
		Request:         policy.RequestOf(sk),
	}
	if r.Subject == "" {
		r.Subject = v1.DefaultSubject(sk.Namespace, sk.Name)
	}
	if sk.Spec.ClientSecret != nil && sk.Spec.ClientSecret.Enabled {
		r.ClientSecretHash = sk.Status.ClientSecretHash
	}
	if sk.Spec.RefreshTokens != nil {
		r.RefreshTTL = sk.Spec.RefreshTokens.TTL.Duration
	}
	if sk.Spec.AccessTokenTTL != nil {
		r.AccessTokenTTL = sk.Spec.AccessTokenTTL.Duration
	}
	switch {
	case sk.Spec.ExpiresAt != nil:
		r.Expiry = &sk.Spec.ExpiresAt.Time
	case sk.Spec.Validity != nil:
		t := sk.CreationTimestamp.Add(sk.Spec.Validity.Duration)
		r.Expiry = &t
	}
	var firstErr error
	for _, c := range sk.Spec.AllowedCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			firstErr = fmt.Errorf("allowedCIDRs entry %q: %w", c, err)
			// An unparsable entry must not widen access: allow nothing rather than anything.
			p = netip.Prefix{}
		}
		r.AllowedCIDRs = append(r.AllowedCIDRs, p)
	}
	for _, k := range sk.Status.Keys {
		pub, err := parse(k.KeyID, k.PublicKey)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("public key %s: %w", k.KeyID, err)
			}
			continue
		}
		r.Keys = append(r.Keys, PublicKey{ID: k.KeyID, Key: pub, NotAfter: timeOf(k.NotAfter), Active: k.State == v1.KeyActive})
	}
	return r, firstErr
}

func timeOf(t *metav1.Time) *time.Time {
	if t == nil {
		return nil
	}
	return &t.Time
}

// usableKeys are the keys that verify grants at now: the Active key, a Pending key
// (published before its private half is written to the Secret, so a pod that loaded
// it is never refused) and Retiring keys within their grace period.
func (r *KeyRecord) usableKeys(now time.Time) []PublicKey {
	var out []PublicKey
	for _, k := range r.Keys {
		if k.NotAfter == nil || now.Before(*k.NotAfter) {
			out = append(out, k)
		}
	}
	return out
}

// refusal says why no grant of this ServiceKey is accepted at now, or "" when they are.
func (r *KeyRecord) refusal(now time.Time) string {
	switch {
	case r.Suspended:
		return "the ServiceKey " + r.ClientID + " is suspended"
	case r.Deleting:
		return "the ServiceKey " + r.ClientID + " is being deleted"
	case r.Expiry != nil && !now.Before(*r.Expiry):
		return "the ServiceKey " + r.ClientID + " has expired"
	}
	return ""
}
