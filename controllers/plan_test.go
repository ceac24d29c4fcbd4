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
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// fixture is a Ready ServiceKey with one Active key and its matching Secret, in a
// namespace a permissive policy selects.
type fixture struct {
	key      *v1.ServiceKey
	secret   *corev1.Secret
	policies []policy.Policy
}

// openPolicy allows every scope, audience and subject, and client secrets.
func openPolicy() policy.Policy {
	return policy.Compile(&v1.ServiceKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: "open"}, Spec: v1.ServiceKeyPolicySpec{
		NamespaceSelector: &metav1.LabelSelector{},
		Allowed:           v1.AllowedPrivileges{Scopes: []string{"*"}, Audiences: []string{"*"}, Subjects: []string{"*"}, ClientSecret: true},
	}})
}

// at is what a reconcile at now observes.
func (f fixture) at(now time.Time) Observed {
	return Observed{Key: f.key, Secret: f.secret, Policies: f.policies, NamespaceLabels: map[string]string{}, Now: now}
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	nk := &NewKey{Key: priv}
	nk.PEM, _ = keyutil.EncodePrivateKey(priv, v1.PKCS1)
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{
		Name: "app", Namespace: "ns", UID: "uid-1", Generation: 1,
		CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour)),
	}}
	sk.Spec.PrivateKey = v1.PrivateKeySpec{Size: 2048, Encoding: v1.PKCS1}
	f := fixture{key: sk, policies: []policy.Policy{openPolicy()}}
	d := f.issue(t, f.at(t0.Add(-time.Hour)), nk)
	sk.Status = d.Status
	f.secret = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "ns", Annotations: d.Secret.Annotations,
			OwnerReferences: []metav1.OwnerReference{{UID: "uid-1", Controller: ptr.To(true)}}},
		Data: d.Secret.Data,
	}
	return f
}

// issue runs the pure part of what Reconcile does when something new is needed:
// decide, publish the new key as Pending, stage it, decide again and build the
// Secret and the promoted status.
func (f fixture) issue(t *testing.T, o Observed, nk *NewKey) Desired {
	t.Helper()
	d := Decide(o)
	if !d.Generate() {
		t.Fatalf("nothing to generate: %+v", d)
	}
	st, _, err := Publish(o, d, nk)
	if err != nil {
		t.Fatal(err)
	}
	if p := pendingKey(st.Keys); p == nil || p.State != v1.KeyPending {
		t.Fatalf("Publish did not publish a Pending key: %+v", st.Keys)
	}
	key := o.Key.DeepCopy()
	key.Status = st
	o.Key, o.Staged = key, &Staged{UID: key.UID, Key: *nk, Cause: d.Rekey}
	d = Decide(o)
	if !d.Promote {
		t.Fatalf("after Publish the Pending key is not promoted: %+v", d)
	}
	out, err := Build(o, d, Config{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newKey(t *testing.T) *NewKey {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := keyutil.EncodePrivateKey(priv, v1.PKCS1)
	if err != nil {
		t.Fatal(err)
	}
	return &NewKey{Key: priv, PEM: pem}
}

func TestDecide(t *testing.T) {
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherPEM, _ := keyutil.EncodePrivateKey(other, v1.PKCS1)
	cases := map[string]struct {
		change       func(f *fixture)
		wantBlocked  string
		wantConflict bool
		wantRekey    RekeyCause
	}{
		"steady state":        {change: func(*fixture) {}},
		"no key yet":          {change: func(f *fixture) { f.key.Status.Keys = nil }, wantRekey: CauseInitial},
		"Secret missing":      {change: func(f *fixture) { f.secret = nil }, wantRekey: CauseSecretMissing},
		"Secret key replaced": {change: func(f *fixture) { f.secret.Data[v1.SecretKeyPrivateKey] = otherPEM }, wantRekey: CauseSecretMismatch},
		"Secret key garbage":  {change: func(f *fixture) { f.secret.Data[v1.SecretKeyPrivateKey] = []byte("x") }, wantRekey: CauseSecretMismatch},
		"size changed":        {change: func(f *fixture) { f.key.Spec.PrivateKey.Size = 3072 }, wantRekey: CausePrivateKeyChanged},
		"encoding changed":    {change: func(f *fixture) { f.key.Spec.PrivateKey.Encoding = v1.PKCS8 }, wantRekey: CausePrivateKeyChanged},
		"rotation requested":  {change: func(f *fixture) { f.key.Annotations = map[string]string{v1.AnnotationRotate: "now"} }, wantRekey: CauseRequested},
		"request already done": {change: func(f *fixture) {
			f.key.Annotations = map[string]string{v1.AnnotationRotate: "x"}
			f.secret.Annotations = map[string]string{AnnotationRotationHandled: "x"}
		}},
		"rotation due": {
			change: func(f *fixture) {
				f.key.Spec.Rotation.Every = &metav1.Duration{Duration: time.Hour}
				f.key.Status.LastRotationTime = &metav1.Time{Time: t0.Add(-time.Hour - time.Hour/50)} // past its jitter
			},
			wantRekey: CauseScheduled,
		},
		"rotation not yet due": {change: func(f *fixture) { f.key.Spec.Rotation.Every = &metav1.Duration{Duration: 2 * time.Hour} }},
		"foreign Secret": {
			change:       func(f *fixture) { f.secret.OwnerReferences = nil },
			wantConflict: true,
		},
		"Secret owned by another ServiceKey": {
			change:       func(f *fixture) { f.secret.OwnerReferences[0].UID = "uid-2" },
			wantConflict: true,
		},
		"no policy: refused, nothing re-keyed": {
			change:      func(f *fixture) { f.policies = nil; f.secret = nil },
			wantBlocked: v1.ReasonPolicyDenied,
		},
		"reserved scope refused by the open policy": {
			change:      func(f *fixture) { f.key.Spec.Scopes = []string{"servicekey:introspect"} },
			wantBlocked: v1.ReasonPolicyDenied,
		},
		"another key's subject refused by the open policy": {
			change:      func(f *fixture) { f.key.Spec.Subject = "system:servicekey:other:app" },
			wantBlocked: v1.ReasonPolicyDenied,
		},
		"custom subject allowed":          {change: func(f *fixture) { f.key.Spec.Subject = "admin" }},
		"own default subject spelled out": {change: func(f *fixture) { f.key.Spec.Subject = "system:servicekey:ns:app" }},
		"expired by expiresAt": {
			change:      func(f *fixture) { f.key.Spec.ExpiresAt = &metav1.Time{Time: t0} },
			wantBlocked: v1.ReasonExpired,
		},
		"expired by validity": {
			change:      func(f *fixture) { f.key.Spec.Validity = &metav1.Duration{Duration: 30 * time.Minute} },
			wantBlocked: v1.ReasonExpired,
		},
		"expired and Secret missing: no new key": {
			change:      func(f *fixture) { f.key.Spec.ExpiresAt = &metav1.Time{Time: t0}; f.secret = nil },
			wantBlocked: v1.ReasonExpired,
		},
		"suspended still maintains the key": {change: func(f *fixture) { f.key.Spec.Suspended = true; f.secret = nil }, wantRekey: CauseSecretMissing},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			tc.change(&f)
			d := Decide(f.at(t0))
			if d.BlockedReason != tc.wantBlocked || d.Rekey != tc.wantRekey || (d.Conflict != "") != tc.wantConflict {
				t.Errorf("blocked %q conflict %q rekey %q, want blocked %q conflict %v rekey %q",
					d.BlockedReason, d.Conflict, d.Rekey, tc.wantBlocked, tc.wantConflict, tc.wantRekey)
			}
		})
	}
}

func TestBuildReadyAndRequeue(t *testing.T) {
	cases := map[string]struct {
		change       func(f *fixture)
		wantStatus   metav1.ConditionStatus
		wantReason   string
		wantSynced   string
		wantRequeue  time.Duration
		wantSecret   bool
		wantNoSynced bool
	}{
		"issued":    {change: func(*fixture) {}, wantStatus: metav1.ConditionTrue, wantReason: v1.ReasonIssued, wantSynced: v1.ReasonSynced, wantSecret: true},
		"suspended": {change: func(f *fixture) { f.key.Spec.Suspended = true }, wantStatus: metav1.ConditionFalse, wantReason: v1.ReasonSuspended, wantSynced: v1.ReasonSynced, wantSecret: true},
		"conflict with a working key: Ready stays True": {
			change:     func(f *fixture) { f.secret.OwnerReferences = nil },
			wantStatus: metav1.ConditionTrue, wantReason: v1.ReasonIssued, wantSynced: v1.ReasonSecretConflict, wantRequeue: time.Second,
		},
		"conflict before any key": {
			change:     func(f *fixture) { f.secret.OwnerReferences = nil; f.key.Status.Keys = nil },
			wantStatus: metav1.ConditionFalse, wantReason: v1.ReasonSecretConflict, wantSynced: v1.ReasonSecretConflict, wantRequeue: time.Second,
		},
		"expired after a refused write: no retry while nothing is written": {
			change: func(f *fixture) {
				f.key.Spec.ExpiresAt = &metav1.Time{Time: t0.Add(-time.Minute)}
				meta.SetStatusCondition(&f.key.Status.Conditions, metav1.Condition{Type: v1.ConditionSynced, Status: metav1.ConditionFalse,
					Reason: v1.ReasonInvalidSpec, LastTransitionTime: metav1.NewTime(t0.Add(-time.Hour))})
			},
			wantStatus: metav1.ConditionFalse, wantReason: v1.ReasonExpired, wantSynced: v1.ReasonInvalidSpec,
		},
		"requeue at expiry": {
			change:     func(f *fixture) { f.key.Spec.ExpiresAt = &metav1.Time{Time: t0.Add(90 * time.Minute)} },
			wantStatus: metav1.ConditionTrue, wantReason: v1.ReasonIssued, wantSynced: v1.ReasonSynced, wantRequeue: 90 * time.Minute, wantSecret: true,
		},
		"requeue at next rotation, jittered": {
			change:     func(f *fixture) { f.key.Spec.Rotation.Every = &metav1.Duration{Duration: 3 * time.Hour} },
			wantStatus: metav1.ConditionTrue, wantReason: v1.ReasonIssued, wantSynced: v1.ReasonSynced,
			wantRequeue: 2*time.Hour + rotationJitter("uid-1", 3*time.Hour/50).Truncate(time.Second), wantSecret: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			tc.change(&f)
			o := f.at(t0)
			d, err := Build(o, Decide(o), Config{})
			if err != nil {
				t.Fatal(err)
			}
			c := meta.FindStatusCondition(d.Status.Conditions, v1.ConditionReady)
			if c.Status != tc.wantStatus || c.Reason != tc.wantReason || c.ObservedGeneration != 1 {
				t.Errorf("Ready %s/%s (gen %d), want %s/%s", c.Status, c.Reason, c.ObservedGeneration, tc.wantStatus, tc.wantReason)
			}
			if s := meta.FindStatusCondition(d.Status.Conditions, v1.ConditionSynced); s == nil || s.Reason != tc.wantSynced {
				t.Errorf("Synced %+v, want reason %s", s, tc.wantSynced)
			}
			if d.RequeueAfter != tc.wantRequeue {
				t.Errorf("requeue after %v, want %v", d.RequeueAfter, tc.wantRequeue)
			}
			if (d.Secret != nil) != tc.wantSecret {
				t.Errorf("Secret written: %v, want %v", d.Secret != nil, tc.wantSecret)
			}
		})
	}
}

func TestRotationKeepsHistoryWithinLimits(t *testing.T) {
	f := newFixture(t)
	now := t0
	for i := 0; i < maxKeys+4; i++ {
		now = now.Add(time.Minute)
		f.key.Annotations = map[string]string{v1.AnnotationRotate: now.String()}
		d := f.issue(t, f.at(now), newKey(t))
		f.key.Status = d.Status
		f.secret.Data, f.secret.Annotations = d.Secret.Data, d.Secret.Annotations
	}
	keys := f.key.Status.Keys
	if len(keys) != maxKeys || keys[0].State != v1.KeyActive {
		t.Fatalf("%d keys, first %s; want %d with the Active key first", len(keys), keys[0].State, maxKeys)
	}
	for i := 2; i < len(keys); i++ {
		if keys[i].Created.After(keys[i-1].Created.Time) {
			t.Errorf("Retiring keys not newest first at %d", i)
		}
	}
	// After the grace period all Retiring keys are retired at once.
	later := f.at(now.Add(25 * time.Hour))
	d, err := Build(later, Decide(later), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Status.Keys) != 1 || len(d.Retired) != maxKeys-1 {
		t.Errorf("after grace: %d keys, %d retired", len(d.Status.Keys), len(d.Retired))
	}
	for _, e := range d.Events {
		if e.Reason != v1.EventKeyRetired {
			t.Errorf("unexpected event %s", e.Reason)
		}
	}
}

func TestBuildNeedsPublishingFirst(t *testing.T) {
	f := newFixture(t)
	if _, err := Build(f.at(t0), Decision{Rekey: CauseScheduled}, Config{}); err == nil {
		t.Fatal("Build re-keyed without publishing first")
	}
	if _, _, err := Publish(f.at(t0), Decision{Rekey: CauseScheduled}, nil); err == nil {
		t.Fatal("Publish re-keyed without a key")
	}
}
