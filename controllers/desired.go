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
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// maxKeys bounds the Active and Retiring keys in status.keys: one Active and up to 15
// Retiring; a Pending key comes on top (the CRD allows 17 entries).
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

// baseStatus is the status as observed with the fields derived from the spec brought
// up to date.
func baseStatus(k *v1.ServiceKey) v1.ServiceKeyStatus {
	return v1.ServiceKeyStatus{
		Conditions:         append([]metav1.Condition(nil), k.Status.Conditions...),
		ObservedGeneration: k.Generation,
		ClientID:           v1.ClientID(k.Namespace, k.Name),
		Subject:            subject(k),
		SecretName:         secretName(k),
		Keys:               append([]v1.PublicKey(nil), k.Status.Keys...),
		LastRotationTime:   k.Status.LastRotationTime,
		NextRotationTime:   k.Status.NextRotationTime,
		ClientSecretHash:   k.Status.ClientSecretHash,
	}
}

// Publish computes the status written before anything new reaches the Secret: a new
// key pair appears as the Pending key (accepted at the token endpoint, held by
// nobody yet) and a new client secret as its hash. Only after this status is stored
// is the Secret written, so no pod can ever load a key the token server refuses. The
// events are those of a ServiceKey turning from refused by policy to permitted.
func Publish(o Observed, d Decision, nk *NewKey) (v1.ServiceKeyStatus, []Event, error) {
	k := o.Key
	now := metav1.NewTime(o.Now.Truncate(time.Second))
	st := baseStatus(k)
	if d.RetirePending {
		retirePending(&st, k, now)
	}
	if d.Rekey != "" {
		if nk == nil || nk.Key == nil {
			return st, nil, fmt.Errorf("decision %s needs a new key", d.Rekey)
		}
		id, err := keyutil.KeyID(&nk.Key.PublicKey)
		if err != nil {
			return st, nil, err
		}
		pub, err := keyutil.EncodePublicKey(&nk.Key.PublicKey)
		if err != nil {
			return st, nil, err
		}
		st.Keys = append([]v1.PublicKey{{KeyID: id, PublicKey: pub, Created: now, State: v1.KeyPending}}, st.Keys...)
	}
	// The Pending key has a slot of its own, but a Pending key retired above now counts
	// with the others and could take the list past the CRD's limit: prune here too.
	retired := pruneRetired(&st, k, o.Now)
	if d.NewClientSecret {
		if nk == nil || nk.ClientSecret == "" {
			return st, nil, errors.New("decision asks for a client secret, none was generated")
		}
		st.ClientSecretHash = keyutil.HashClientSecret(nk.ClientSecret)
	}
	if activeKey(st.Keys) == nil {
		setCondition(&st, k, o.Now, v1.ConditionReady, metav1.ConditionFalse, v1.ReasonPending,
			"key "+pendingKey(st.Keys).KeyID+" is published; its private key is being written to Secret "+st.SecretName)
	} else {
		setReady(&st, k, d, o.Now) // a key permitted again reads Ready now, so Build sees no second transition
	}
	var out Desired
	policyTransition(&out, readyReason(k.Status.Conditions), d)
	return st, append(out.Events, retiredEvents(retired)...), nil
}

// retiredEvents tell an admin which keys are no longer accepted.
func retiredEvents(ids []string) []Event {
	var events []Event
	for _, id := range ids {
		events = append(events, Event{corev1.EventTypeNormal, v1.EventKeyRetired, "Retire",
			"key " + id + " passed its grace period and is no longer accepted"})
	}
	return events
}

// Build computes the desired Secret, status and events once nothing new needs
// publishing first: a Pending key is promoted (its private half written to the
// Secret if it is not there yet) or retired, retired keys are pruned, and the
// conditions say where things stand. It is pure: time comes from Observed.
func Build(o Observed, d Decision, p Config) (Desired, error) {
	k := o.Key
	if d.Generate() {
		return Desired{}, fmt.Errorf("decision %q needs publishing first", d.Rekey)
	}
	now := metav1.NewTime(o.Now.Truncate(time.Second))
	st := baseStatus(k)
	var out Desired
	writes := d.BlockedReason == "" && d.Conflict == ""
	secretValue, secretHash := "", ""
	if writes {
		secretValue, secretHash = clientSecretOf(o, d)
		if secretHash == "" {
			st.ClientSecretHash = ""
		}
		if d.RetirePending {
			retirePending(&st, k, now)
		}
		if d.Promote {
			out.Events = append(out.Events, promote(&st, k, d.PromoteCause, now))
			out.Rotated = d.PromoteCause
		}
	}
	out.Retired = pruneRetired(&st, k, o.Now)
	out.Events = append(out.Events, retiredEvents(out.Retired)...)
	if a := activeKey(st.Keys); a != nil {
		a.NotAfter = timePtr(expiry(k))
	}
	st.NextRotationTime = timePtr(nextRotationOf(k, st.LastRotationTime))
	setReady(&st, k, d, o.Now)
	setSynced(&st, k, d, o.Now)
	if d.Conflict != "" && syncedReason(k.Status.Conditions) != v1.ReasonSecretConflict {
		out.Events = append(out.Events, Event{corev1.EventTypeWarning, v1.EventSecretConflict, "Skip", d.Conflict})
	}
	policyTransition(&out, readyReason(k.Status.Conditions), d)
	if writes && activeKey(st.Keys) != nil {
		content, err := secretContent(o, d, p, st, secretValue, secretHash)
		if err != nil {
			return Desired{}, err
		}
		out.Secret = content
	}
	out.Status = st
	out.RequeueAfter = requeueAfter(k, st, o.Now)
	return out, nil
}

// SecretRefused is the status after the API server refused the Secret: what was
// published stays published (a Pending key stays Pending, its private half staged in
// memory for the retry), Ready still says whether the Active key works, and Synced
// says what was refused.
func SecretRefused(o Observed, d Decision, p Config, reason, message string) (Desired, error) {
	d.Promote = false
	out, err := Build(o, d, p)
	if err != nil {
		return Desired{}, err
	}
	out.Secret = nil
	setCondition(&out.Status, o.Key, o.Now, v1.ConditionSynced, metav1.ConditionFalse, reason, message)
	out.RequeueAfter = requeueAfter(o.Key, out.Status, o.Now)
	if syncedReason(o.Key.Status.Conditions) != reason {
		out.Events = append(out.Events, Event{corev1.EventTypeWarning, v1.EventSecretWriteFailed, "Write", message})
	}
	return out, nil
}

// retirePending turns a Pending key whose private half is nowhere to be found into a
// Retiring key for the grace period rather than deleting it: normally nobody holds
// it, but a Secret write by a deposed leader may still land, or the Secret may have
// been reverted after holding it, and a key that reached a Secret must keep working
// until it retires.
func retirePending(st *v1.ServiceKeyStatus, k *v1.ServiceKey, now metav1.Time) {
	if p := pendingKey(st.Keys); p != nil {
		until := metav1.NewTime(now.Add(gracePeriod(k)))
		// superseded = created marks a key that was never Active: the first to go when
		// the list is full, before any key pods were told to use.
		p.State, p.Superseded, p.NotAfter = v1.KeyRetiring, p.Created.DeepCopy(), &until
	}
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

// clientSecretOf is the client secret to keep or write, and its hash: none when
// disabled, else the one matching the published hash, staged in memory or in the
// Secret (its value "" when the Secret came from the cache, which keeps its hash only).
func clientSecretOf(o Observed, d Decision) (value, hash string) {
	if !clientSecretEnabled(o.Key) {
		return "", ""
	}
	published := o.Key.Status.ClientSecretHash
	if st := o.Staged; st != nil && st.Key.ClientSecret != "" && keyutil.ClientSecretMatches(st.Key.ClientSecret, published) {
		return st.Key.ClientSecret, published
	}
	return d.secret.clientSecret, d.secret.clientSecretHash
}

// promote makes the Pending key Active and turns the previous Active key Retiring
// for the grace period, whatever the cause: pods that still hold the previous key (a
// mounted Secret is refreshed by the kubelet only after a while) keep working.
func promote(st *v1.ServiceKeyStatus, k *v1.ServiceKey, cause RekeyCause, now metav1.Time) Event {
	retiring := ""
	until := metav1.NewTime(now.Add(gracePeriod(k)))
	for i := range st.Keys {
		if st.Keys[i].State == v1.KeyActive {
			st.Keys[i].State = v1.KeyRetiring
			st.Keys[i].NotAfter = &until
			st.Keys[i].Superseded = &now
			retiring = st.Keys[i].KeyID
		}
	}
	p := pendingKey(st.Keys)
	p.State = v1.KeyActive
	st.LastRotationTime = &now
	if cause == CauseResumed && retiring == "" {
		cause = CauseInitial
	}
	return rotationEvent(cause, secretName(k), p.KeyID, retiring, until)
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

// pruneRetired shortens the grace of Retiring keys to the spec's gracePeriod (lowering
// it ends a leaked key's life at once; raising it never extends a key), removes
// Retiring keys whose grace has ended and the oldest ones beyond the CRD's limit,
// and returns their IDs.
func pruneRetired(st *v1.ServiceKeyStatus, k *v1.ServiceKey, now time.Time) []string {
	sortKeys(st.Keys)
	var kept []v1.PublicKey
	var retired []string
	counted := 0 // Active and Retiring keys kept; a Pending key has a slot of its own
	for i, key := range st.Keys {
		if key.State == v1.KeyRetiring {
			since := key.Superseded
			if since == nil && i > 0 { // published before superseded existed: replaced when its successor was created
				since = &st.Keys[i-1].Created
			}
			if since != nil {
				if end := metav1.NewTime(since.Add(gracePeriod(k))); key.NotAfter == nil || end.Before(key.NotAfter) {
					key.NotAfter = &end
				}
			}
		}
		gone := key.State == v1.KeyRetiring &&
			(key.NotAfter != nil && !now.Before(key.NotAfter.Time) || counted >= maxKeys)
		if gone {
			retired = append(retired, key.KeyID)
			continue
		}
		kept = append(kept, key)
		if key.State != v1.KeyPending {
			counted++
		}
	}
	st.Keys = kept
	return retired
}

// sortKeys puts the Pending key first, then the Active key, then Retiring keys newest
// first, and last the Retiring keys that were never Active, so the list reads like the
// key's history and the limit on its length cuts keys nobody was given first.
func sortKeys(keys []v1.PublicKey) {
	rank := func(k v1.PublicKey) int {
		switch {
		case k.State == v1.KeyPending:
			return 0
		case k.State == v1.KeyActive:
			return 1
		case k.Superseded != nil && k.Superseded.Equal(&k.Created):
			return 3
		default:
			return 2
		}
	}
	sort.SliceStable(keys, func(i, j int) bool {
		if ri, rj := rank(keys[i]), rank(keys[j]); ri != rj {
			return ri < rj
		}
		return keys[i].Created.After(keys[j].Created.Time)
	})
}

// setReady says whether the Active key works now: Ready is about the key, never
// about a write that failed while it kept working (that is Synced's business).
func setReady(st *v1.ServiceKeyStatus, k *v1.ServiceKey, d Decision, now time.Time) {
	active := activeKey(st.Keys)
	status, reason, msg := metav1.ConditionTrue, v1.ReasonIssued, ""
	switch {
	case d.BlockedReason != "":
		status, reason, msg = metav1.ConditionFalse, d.BlockedReason, d.BlockedMessage
	case k.Spec.Suspended:
		status, reason, msg = metav1.ConditionFalse, v1.ReasonSuspended,
			"spec.suspended is true: grants are refused until it is unset"
	case active == nil && d.Conflict != "":
		status, reason, msg = metav1.ConditionFalse, v1.ReasonSecretConflict, d.Conflict
	case active == nil:
		status, reason, msg = metav1.ConditionFalse, v1.ReasonPending,
			"no key has reached Secret "+st.SecretName+" yet; see condition Synced"
	default:
		msg = "key " + active.KeyID + " is active; the private key is in Secret " + st.SecretName
	}
	setCondition(st, k, now, v1.ConditionReady, status, reason, msg)
}

// setSynced says whether the Secret and the status hold everything the spec asks for.
// A blocked ServiceKey writes nothing, and its Synced condition is left as it was.
func setSynced(st *v1.ServiceKeyStatus, k *v1.ServiceKey, d Decision, now time.Time) {
	switch {
	case d.BlockedReason != "":
	case d.Conflict != "":
		setCondition(st, k, now, v1.ConditionSynced, metav1.ConditionFalse, v1.ReasonSecretConflict, d.Conflict)
	default:
		setCondition(st, k, now, v1.ConditionSynced, metav1.ConditionTrue, v1.ReasonSynced,
			"Secret "+st.SecretName+" and the status match the spec")
	}
}

// setCondition sets one condition; its lastTransitionTime comes from the injected
// clock when the status changes.
func setCondition(st *v1.ServiceKeyStatus, k *v1.ServiceKey, now time.Time, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: k.Generation, LastTransitionTime: metav1.NewTime(now.Truncate(time.Second))})
}

func syncedReason(conds []metav1.Condition) string {
	if c := meta.FindStatusCondition(conds, v1.ConditionSynced); c != nil {
		return c.Reason
	}
	return ""
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
	// A blocked key (expired, refused by policy) writes nothing, so a Synced
	// False it kept from before has nothing to retry until it is unblocked (an event).
	if c := meta.FindStatusCondition(st.Conditions, v1.ConditionSynced); c != nil && c.Status == metav1.ConditionFalse && !blocked(st) {
		retry := now.Add(syncRetry(now.Sub(c.LastTransitionTime.Time)))
		consider(&retry)
	}
	if next.IsZero() {
		return 0
	}
	return next.Sub(now)
}

// blocked: the status's Ready reason is a blocker's, under which the controller
// writes nothing.
func blocked(st v1.ServiceKeyStatus) bool { return isBlocker(readyReason(st.Conditions)) }

// syncRetry is how soon a Synced=False ServiceKey is looked at again: half the time
// it has been failing, between one second and one minute. Some causes send no event
// when they clear (a foreign Secret deleted is not in the controller's cache, an
// admission policy removed), so the controller must look by itself.
func syncRetry(failingFor time.Duration) time.Duration {
	return min(max(failingFor/2, time.Second), time.Minute)
}

// maxRotationJitter bounds the delay added to scheduled rotations.
const maxRotationJitter = time.Hour

// nextRotationOf is when automatic rotation is due: last + every, plus a delay of up
// to 2% of every (at most an hour) derived from the ServiceKey's UID, so keys created
// together (one kubectl apply of a hundred manifests) do not all rotate in the same
// second. The delay is stable across reconciles and restarts.
func nextRotationOf(k *v1.ServiceKey, last *metav1.Time) *time.Time {
	if k.Spec.Rotation.Every == nil || last == nil {
		return nil
	}
	every := k.Spec.Rotation.Every.Duration
	t := last.Add(every + rotationJitter(k.UID, min(every/50, maxRotationJitter)))
	return &t
}

// rotationJitter maps uid to a duration in [0, span), evenly.
func rotationJitter(uid types.UID, span time.Duration) time.Duration {
	if span <= 0 {
		return 0
	}
	sum := sha256.Sum256([]byte(uid))
	return time.Duration(binary.BigEndian.Uint64(sum[:8]) % uint64(span)) //nolint:gosec // span > 0, result < span
}

func timePtr(t *time.Time) *metav1.Time {
	if t == nil {
		return nil
	}
	mt := metav1.NewTime(t.Truncate(time.Second))
	return &mt
}
