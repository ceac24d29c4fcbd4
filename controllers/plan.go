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

package controllers

import (
	"crypto/subtle"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// Observed is everything a reconcile read: the ServiceKey, its Secret (nil when
// absent), the labels of its namespace (nil when unknown), the ServiceKeyPolicies, the
// key staged in memory for it (nil when none) and the time. Decisions are pure
// functions of it.
type Observed struct {
	Key             *v1.ServiceKey
	Secret          *corev1.Secret
	NamespaceLabels map[string]string
	Policies        []policy.Policy
	Staged          *Staged
	Now             time.Time
}

// Config is the controller-wide configuration the decisions depend on.
type Config struct {
	// TokenURI is written into key files as token_uri.
	TokenURI string
}

// RekeyCause says why a new key pair is needed; empty means none is.
type RekeyCause string

// Rekey causes, also the `cause` label of the rotations metric.
const (
	CauseInitial           RekeyCause = "Initial"
	CauseSecretMissing     RekeyCause = "SecretMissing"
	CauseSecretMismatch    RekeyCause = "SecretMismatch"
	CausePrivateKeyChanged RekeyCause = "PrivateKeyChanged"
	CauseRequested         RekeyCause = "Requested"
	CauseScheduled         RekeyCause = "Scheduled"
	// CauseResumed: a Pending key found already in the Secret after a controller
	// restart, its original cause lost with the process's memory.
	CauseResumed RekeyCause = "Resumed"
)

// AnnotationRotationHandled on the Secret records the last value of the ServiceKey's
// rotate annotation that was acted on, so a rotation request is honoured exactly once.
const AnnotationRotationHandled = "auth.servicekey.dev/rotation-handled"

// blocker is a check that, when it fails, stops the controller from touching the
// Secret at all: the Ready reason it sets, and the check, which returns the message,
// or "" when it passes.
type blocker struct {
	reason string
	check  func(o Observed, v policy.Verdict) (message string)
}

// blockers run in order; the first failing one decides the Ready condition.
var blockers = []blocker{{v1.ReasonPolicyDenied, policyDenied}, {v1.ReasonExpired, expired}}

// isBlocker reports a Ready reason under which the controller writes nothing.
func isBlocker(reason string) bool {
	for _, b := range blockers {
		if b.reason == reason {
			return true
		}
	}
	return false
}

// policyDenied refuses a ServiceKey that no ServiceKeyPolicy selecting its namespace
// permits: no key is issued, and an issued key keeps its Secret (the token server
// refuses it on its own) so that a policy permitting it again brings it back as it was.
func policyDenied(_ Observed, v policy.Verdict) string {
	if v.Allowed {
		return ""
	}
	return v.Message()
}

// secretConflict returns a message when the Secret of the wanted name is not
// controlled by this ServiceKey: it could be someone's database password, so it is
// never touched. The conflict clears by itself once that Secret is gone (the
// controller looks again with backoff). secretName cannot be changed on an existing
// ServiceKey, so the message does not suggest it.
func secretConflict(o Observed) string {
	if o.Secret == nil {
		return ""
	}
	for _, ref := range o.Secret.OwnerReferences {
		if ref.Controller != nil && *ref.Controller && ref.UID == o.Key.UID {
			return ""
		}
	}
	return "Secret " + o.Secret.Name + " exists and is not owned by this ServiceKey; it is left untouched. " +
		"Delete that Secret and the key is written within a minute, or create a ServiceKey with another spec.secretName"
}

// expired stops issuing and repairing once the ServiceKey's validity has ended; the
// Secret is kept so that extending expiresAt brings the same key back.
func expired(o Observed, _ policy.Verdict) string {
	exp := expiry(o.Key)
	if exp == nil || o.Now.Before(*exp) {
		return ""
	}
	return "the ServiceKey expired at " + exp.UTC().Format(time.RFC3339) + "; grants are refused"
}

// rekeyCheck reports a cause for a new key pair, or "".
type rekeyCheck func(o Observed, s secretState) RekeyCause

// rekeyChecks run in order; the first cause found wins.
var rekeyChecks = []rekeyCheck{noActiveKey, secretMissing, secretMismatch, privateKeyChanged, rotationRequested, rotationDue}

// secretState is what the Secret says about the key it holds. From the cache, which
// keeps only digests (SummarizeSecret), the private key and client secret are known
// by digest only; from a live read, they are at hand too.
type secretState struct {
	keyID    string // "" when absent or unreadable
	bits     int
	encoding v1.PrivateKeyEncoding
	// pemDigest and clientSecretHash are the digests of private-key.pem and
	// client-secret ("" when there is none).
	pemDigest, clientSecretHash string
	// pem and clientSecret are the values, when the Secret was read live.
	pem          []byte
	clientSecret string
}

func readSecret(s *corev1.Secret) secretState {
	if s == nil {
		return secretState{}
	}
	sum := summarize(s.Data)
	// The client secret is judged on its own: an unreadable private key is a reason
	// for a new key pair, not for a new client secret.
	st := secretState{clientSecretHash: string(sum[v1.SecretKeyClientSecret])}
	if fullData(s.Data) {
		st.clientSecret = string(s.Data[v1.SecretKeyClientSecret])
	}
	if f := factsOf(sum); f.KeyID != "" {
		st.keyID, st.bits, st.encoding, st.pemDigest = f.KeyID, f.Bits, f.Encoding, string(sum[v1.SecretKeyPrivateKey])
		if fullData(s.Data) {
			st.pem = s.Data[v1.SecretKeyPrivateKey]
		}
	}
	return st
}

func noActiveKey(o Observed, _ secretState) RekeyCause {
	if activeKey(o.Key.Status.Keys) == nil {
		return CauseInitial
	}
	return ""
}

func secretMissing(o Observed, _ secretState) RekeyCause {
	if o.Secret == nil {
		return CauseSecretMissing
	}
	return ""
}

func secretMismatch(o Observed, s secretState) RekeyCause {
	if s.keyID == "" || s.keyID != activeKey(o.Key.Status.Keys).KeyID {
		return CauseSecretMismatch
	}
	return ""
}

func privateKeyChanged(o Observed, s secretState) RekeyCause {
	want := o.Key.Spec.PrivateKey
	if int32(s.bits) != keySize(want) || s.encoding != keyEncoding(want) { //nolint:gosec // bit lengths fit
		return CausePrivateKeyChanged
	}
	return ""
}

func rotationRequested(o Observed, _ secretState) RekeyCause {
	want, ok := o.Key.Annotations[v1.AnnotationRotate]
	if ok && want != o.Secret.Annotations[AnnotationRotationHandled] {
		return CauseRequested
	}
	return ""
}

func rotationDue(o Observed, _ secretState) RekeyCause {
	if next := nextRotation(o.Key); next != nil && !o.Now.Before(*next) {
		return CauseScheduled
	}
	return ""
}

// Decision is the outcome of the pure checks: a blocker's reason, a conflict, what to
// do with a Pending key, whether (and why) to re-key.
type Decision struct {
	// Policy is the ServiceKeyPolicy verdict on the ServiceKey.
	Policy policy.Verdict
	// BlockedReason and BlockedMessage are set when a blocker failed; nothing is written
	// to the Secret then.
	BlockedReason, BlockedMessage string
	// Conflict is set when the Secret belongs to someone else; it is not written.
	Conflict string
	// Promote: the status has a Pending key whose private half is in the Secret or
	// staged in memory; the Secret gets it (if it does not hold it yet) and the key
	// becomes Active. PromoteCause says why it was made.
	Promote      bool
	PromoteCause RekeyCause
	// RetirePending: the status has a Pending key whose private half is nowhere (the
	// controller stopped between publishing it and writing the Secret). It turns
	// Retiring for the grace period: normally nobody holds it, but a write by a deposed
	// leader may still land.
	RetirePending bool
	// Rekey is the cause for a new key pair, or "". A new key is published as Pending
	// before the Secret is written.
	Rekey RekeyCause
	// NewClientSecret asks for a new client secret: enabled, and neither the Secret
	// nor the staged key has one matching the published hash. Its hash is published
	// before the Secret is written.
	NewClientSecret bool
	// secret is the parsed current Secret, reused when not re-keying.
	secret secretState
}

// Generate reports whether the decision needs something new (a key pair, a client
// secret) published before the Secret is written.
func (d Decision) Generate() bool { return d.Rekey != "" || d.NewClientSecret }

// Decide judges the ServiceKey against the policies, runs the blockers, and then
// decides, in this order: finish a Pending key (promote it or retire it), re-key, or
// only bring the Secret's metadata and the status up to date.
func Decide(o Observed) Decision {
	v := policy.Evaluate(policy.RequestOf(o.Key), o.NamespaceLabels, o.Policies)
	for _, b := range blockers {
		if msg := b.check(o, v); msg != "" {
			return Decision{Policy: v, BlockedReason: b.reason, BlockedMessage: msg}
		}
	}
	if msg := secretConflict(o); msg != "" {
		return Decision{Policy: v, Conflict: msg}
	}
	s := readSecret(o.Secret)
	d := Decision{Policy: v, secret: s}
	d.NewClientSecret = clientSecretEnabled(o.Key) && !clientSecretKnown(o, s)
	if p := pendingKey(o.Key.Status.Keys); p != nil {
		switch {
		case stagedKeyID(o.Staged) == p.KeyID:
			d.Promote, d.PromoteCause = true, o.Staged.Cause
		case s.keyID != "" && s.keyID == p.KeyID:
			d.Promote, d.PromoteCause = true, CauseResumed
		default:
			d.RetirePending = true
		}
		if d.Promote {
			return d
		}
	}
	for _, check := range rekeyChecks {
		if cause := check(o, s); cause != "" {
			d.Rekey = cause
			return d
		}
	}
	return d
}

// clientSecretKnown reports whether a client secret matching the published hash is
// in the Secret or staged in memory.
func clientSecretKnown(o Observed, s secretState) bool {
	hash := o.Key.Status.ClientSecretHash
	if s.clientSecretHash != "" && subtle.ConstantTimeCompare([]byte(s.clientSecretHash), []byte(hash)) == 1 {
		return true
	}
	st := o.Staged
	return st != nil && st.Key.ClientSecret != "" && keyutil.ClientSecretMatches(st.Key.ClientSecret, hash)
}

// stagedKeyID is the key ID of the staged key pair, "" when there is none.
func stagedKeyID(st *Staged) string {
	if st == nil || st.Key.Key == nil {
		return ""
	}
	id, err := keyutil.KeyID(&st.Key.Key.PublicKey)
	if err != nil {
		return ""
	}
	return id
}

func clientSecretEnabled(k *v1.ServiceKey) bool {
	return k.Spec.ClientSecret != nil && k.Spec.ClientSecret.Enabled
}

func activeKey(keys []v1.PublicKey) *v1.PublicKey { return keyIn(keys, v1.KeyActive) }

func pendingKey(keys []v1.PublicKey) *v1.PublicKey { return keyIn(keys, v1.KeyPending) }

func keyWithID(keys []v1.PublicKey, id string) *v1.PublicKey {
	for i := range keys {
		if keys[i].KeyID == id {
			return &keys[i]
		}
	}
	return nil
}

func keyIn(keys []v1.PublicKey, state v1.KeyState) *v1.PublicKey {
	for i := range keys {
		if keys[i].State == state {
			return &keys[i]
		}
	}
	return nil
}

// expiry is when the ServiceKey stops working, from expiresAt or creation + validity.
func expiry(k *v1.ServiceKey) *time.Time {
	switch {
	case k.Spec.ExpiresAt != nil:
		t := k.Spec.ExpiresAt.Time
		return &t
	case k.Spec.Validity != nil:
		t := k.CreationTimestamp.Add(k.Spec.Validity.Duration)
		return &t
	}
	return nil
}

// nextRotation is when the Active key is due for automatic rotation, or nil.
func nextRotation(k *v1.ServiceKey) *time.Time {
	return nextRotationOf(k, k.Status.LastRotationTime)
}

func gracePeriod(k *v1.ServiceKey) time.Duration {
	if k.Spec.Rotation.GracePeriod == nil {
		return 24 * time.Hour
	}
	return k.Spec.Rotation.GracePeriod.Duration
}

func keySize(p v1.PrivateKeySpec) int32 {
	if p.Size == 0 {
		return 2048
	}
	return p.Size
}

func keyEncoding(p v1.PrivateKeySpec) v1.PrivateKeyEncoding {
	if p.Encoding == "" {
		return v1.PKCS1
	}
	return p.Encoding
}

func secretName(k *v1.ServiceKey) string {
	if k.Spec.SecretName != "" {
		return k.Spec.SecretName
	}
	return k.Name
}

func subject(k *v1.ServiceKey) string {
	if k.Spec.Subject != "" {
		return k.Spec.Subject
	}
	return v1.DefaultSubject(k.Namespace, k.Name)
}
