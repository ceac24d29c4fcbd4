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
	"crypto/rsa"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// maxKeys is the CRD's limit on status.keys: one Active and up to 15 Retiring keys.
const maxKeys = 16

// Event is an event to emit about the ServiceKey after the writes succeeded.
type Event struct {
	Type, Reason, Action, Note string
}

// Desired is the state a reconcile writes: the Secret (nil: leave it alone), the
// status, the events to emit and when to look again.
type Desired struct {
	Secret *SecretContent
	Status v1.ServiceKeyStatus
	Events []Event
	// Rotated is the cause of the key pair this state publishes, "" when none is new.
	Rotated      RekeyCause
	Retired      []string
	RequeueAfter time.Duration
	// Denied are the kinds of privilege no policy allows, set only when this state
	// turns the ServiceKey from permitted to refused (the metric counts transitions).
	Denied []policy.Kind
}

// NewKey is a freshly generated key pair and its encodings, and a fresh client
// secret when the decision asked for one.
type NewKey struct {
	Key          *rsa.PrivateKey
	PEM          []byte
	ClientSecret string
}

// Build computes the desired Secret, status and events from what was observed, the
// decision, and the new key when the decision asked for one. It is pure: time comes
// from Observed, randomness only through newKey.
func Build(o Observed, d Decision, p Config, newKey *NewKey) (Desired, error) {
	k := o.Key
	now := metav1.NewTime(o.Now.Truncate(time.Second))
	st := v1.ServiceKeyStatus{
		Conditions:         append([]metav1.Condition(nil), k.Status.Conditions...),
		ObservedGeneration: k.Generation,
		ClientID:           v1.ClientID(k.Namespace, k.Name),
		Subject:            subject(k),
		SecretName:         secretName(k),
		Keys:               append([]v1.PublicKey(nil), k.Status.Keys...),
		LastRotationTime:   k.Status.LastRotationTime,
		ClientSecretHash:   k.Status.ClientSecretHash,
	}
	var out Desired
	secretValue, err := clientSecretOf(k, d, newKey)
	if err != nil {
		return Desired{}, err
	}
	if d.BlockedReason == "" { // a blocked ServiceKey keeps what it published
		st.ClientSecretHash = ""
		if secretValue != "" {
			st.ClientSecretHash = keyutil.HashClientSecret(secretValue)
		}
	}
	if d.Rekey != "" {
		if newKey == nil || newKey.Key == nil {
			return Desired{}, fmt.Errorf("decision %s needs a new key", d.Rekey)
		}
		ev, err := rotate(&st, k, d.Rekey, newKey, now)
		if err != nil {
			return Desired{}, err
		}
		out.Events = append(out.Events, ev)
		out.Rotated = d.Rekey
	}
	out.Retired = pruneRetired(&st, o.Now)
	for _, id := range out.Retired {
		out.Events = append(out.Events, Event{corev1.EventTypeNormal, v1.EventKeyRetired, "Retire",
			"key " + id + " passed its grace period and is no longer accepted"})
	}
	if a := activeKey(st.Keys); a != nil {
		a.NotAfter = timePtr(expiry(k))
	}
	st.NextRotationTime = timePtr(nextRotationOf(k, st.LastRotationTime))
	setReady(&st, k, d)
	if d.BlockedReason == v1.ReasonSecretConflict && readyReason(k.Status.Conditions) != v1.ReasonSecretConflict {
		out.Events = append(out.Events, Event{corev1.EventTypeWarning, v1.EventSecretConflict, "Skip", d.BlockedMessage})
	}
	policyTransition(&out, readyReason(k.Status.Conditions), d)
	if d.BlockedReason == "" {
		content, err := secretContent(o, d, p, st, newKey, secretValue)
		if err != nil {
			return Desired{}, err
		}
		out.Secret = content
	}
	out.Status = st
	out.RequeueAfter = requeueAfter(k, st, o.Now)
	return out, nil
}

// policyTransition records an Event, and the kinds for the metric, when the
// ServiceKey turns from permitted to refused by policy or back.
func policyTransition(out *Desired, prevReason string, d Decision) {
	denied := d.BlockedReason == v1.ReasonPolicyDenied
	switch {
	case denied && prevReason != v1.ReasonPolicyDenied:
		out.Denied = d.Policy.Kinds()
		out.Events = append(out.Events, Event{corev1.EventTypeWarning, v1.EventPolicyDenied, "Refuse",
			d.BlockedMessage + "; no key is issued and grants are refused"})
	case !denied && prevReason == v1.ReasonPolicyDenied && d.Policy.Allowed:
		out.Events = append(out.Events, Event{corev1.EventTypeNormal, v1.EventPolicyAllowed, "Permit",
			"permitted by ServiceKeyPolicy " + d.Policy.By})
	}
}

// clientSecretOf is the client secret to keep or write: none when disabled, the new
// one when the decision asked for it, else the one in the Secret.
func clientSecretOf(k *v1.ServiceKey, d Decision, nk *NewKey) (string, error) {
	switch {
	case !clientSecretEnabled(k) || d.BlockedReason != "":
		return "", nil
	case d.NewClientSecret:
		if nk == nil || nk.ClientSecret == "" {
			return "", fmt.Errorf("decision asks for a client secret, none was generated")
		}
		return nk.ClientSecret, nil
	default:
		return d.secret.clientSecret, nil
	}
}

// rotate makes newKey the Active key and turns the previous Active key Retiring for
// the grace period, whatever the cause: pods that still hold the previous key (a
// mounted Secret is refreshed by the kubelet only after a while) keep working.
func rotate(st *v1.ServiceKeyStatus, k *v1.ServiceKey, cause RekeyCause, nk *NewKey, now metav1.Time) (Event, error) {
	id, err := keyutil.KeyID(&nk.Key.PublicKey)
	if err != nil {
		return Event{}, err
	}
	pub, err := keyutil.EncodePublicKey(&nk.Key.PublicKey)
	if err != nil {
		return Event{}, err
	}
	retiring := ""
	until := metav1.NewTime(now.Add(gracePeriod(k)))
	for i := range st.Keys {
		if st.Keys[i].State == v1.KeyActive {
			st.Keys[i].State = v1.KeyRetiring
			st.Keys[i].NotAfter = &until
			retiring = st.Keys[i].KeyID
		}
	}
	st.Keys = append([]v1.PublicKey{{KeyID: id, PublicKey: pub, Created: now, State: v1.KeyActive}}, st.Keys...)
	st.LastRotationTime = &now
	return rotationEvent(cause, secretName(k), id, retiring, until), nil
}

func rotationEvent(cause RekeyCause, secret, id, retiring string, until metav1.Time) Event {
	prev := ""
	if retiring != "" {
		prev = fmt.Sprintf("; previous key %s accepted until %s", retiring, until.UTC().Format(time.RFC3339))
	}
	switch cause {
	case CauseInitial:
		return Event{corev1.EventTypeNormal, v1.EventKeyIssued, "Issue", "issued key " + id + " into Secret " + secret}
	case CauseSecretMissing:
		return Event{corev1.EventTypeNormal, v1.EventSecretRestored, "Restore",
			"Secret " + secret + " was missing; wrote it with new key " + id + prev}
	case CauseSecretMismatch:
		return Event{corev1.EventTypeWarning, v1.EventSecretRestored, "Restore",
			"Secret " + secret + " held a private key that is not the published one; wrote it with new key " + id + prev}
	default:
		return Event{corev1.EventTypeNormal, v1.EventKeyRotated, "Rotate",
			fmt.Sprintf("rotated to key %s (%s)%s", id, cause, prev)}
	}
}

// pruneRetired removes Retiring keys whose grace period has ended, and the oldest
// Retiring keys beyond the CRD's limit, returning their IDs.
func pruneRetired(st *v1.ServiceKeyStatus, now time.Time) []string {
	sortKeys(st.Keys)
	var kept []v1.PublicKey
	var retired []string
	for _, key := range st.Keys {
		gone := key.State == v1.KeyRetiring &&
			(key.NotAfter != nil && !now.Before(key.NotAfter.Time) || len(kept) >= maxKeys)
		if gone {
			retired = append(retired, key.KeyID)
			continue
		}
		kept = append(kept, key)
	}
	st.Keys = kept
	return retired
}

// sortKeys puts the Active key first, then Retiring keys newest first, so the list
// reads like the key's history.
func sortKeys(keys []v1.PublicKey) {
	sort.SliceStable(keys, func(i, j int) bool {
		if (keys[i].State == v1.KeyActive) != (keys[j].State == v1.KeyActive) {
			return keys[i].State == v1.KeyActive
		}
		return keys[i].Created.After(keys[j].Created.Time)
	})
}

func setReady(st *v1.ServiceKeyStatus, k *v1.ServiceKey, d Decision) {
	c := metav1.Condition{Type: v1.ConditionReady, ObservedGeneration: k.Generation}
	active := activeKey(st.Keys)
	switch {
	case d.BlockedReason != "":
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, d.BlockedReason, d.BlockedMessage
	case k.Spec.Suspended:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1.ReasonSuspended,
			"spec.suspended is true: grants are refused until it is unset"
	default:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonIssued
		c.Message = "key " + active.KeyID + " is active; the private key is in Secret " + st.SecretName
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

func readyReason(conds []metav1.Condition) string {
	if c := meta.FindStatusCondition(conds, v1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

// requeueAfter is the time until the next scheduled change: a grace period ending,
// the expiry, or the next rotation. Zero means nothing is scheduled.
func requeueAfter(k *v1.ServiceKey, st v1.ServiceKeyStatus, now time.Time) time.Duration {
	var next time.Time
	consider := func(t *time.Time) {
		if t != nil && t.After(now) && (next.IsZero() || t.Before(next)) {
			next = *t
		}
	}
	for _, key := range st.Keys {
		if key.State == v1.KeyRetiring && key.NotAfter != nil {
			consider(&key.NotAfter.Time)
		}
	}
	consider(expiry(k))
	if st.NextRotationTime != nil {
		consider(&st.NextRotationTime.Time)
	}
	if next.IsZero() {
		return 0
	}
	return next.Sub(now)
}

func nextRotationOf(k *v1.ServiceKey, last *metav1.Time) *time.Time {
	if k.Spec.Rotation.Every == nil || last == nil {
		return nil
	}
	t := last.Add(k.Spec.Rotation.Every.Duration)
	return &t
}

func timePtr(t *time.Time) *metav1.Time {
	if t == nil {
		return nil
	}
	mt := metav1.NewTime(t.Truncate(time.Second))
	return &mt
}
