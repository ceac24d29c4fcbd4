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
	"crypto/rand"
	"crypto/rsa"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// TestRecordAcceptsPublishedKeysWhateverReady: the controller publishes a key as
// Pending before it writes the Secret, and Ready is False (Pending) until the first
// key has reached the Secret. A pod may hold that key already (the controller
// stopped between the Secret write and the status update): it must be accepted.
// Ready is never a reason to refuse: what refuses (suspended, expired, policy) the
// token server judges itself.
func TestRecordAcceptsPublishedKeysWhateverReady(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := keyutil.KeyID(&priv.PublicKey)
	pem, _ := keyutil.EncodePublicKey(&priv.PublicKey)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	cases := map[string]struct {
		state  v1.KeyState
		reason string
	}{
		"first key Pending, Ready Pending":        {state: v1.KeyPending, reason: v1.ReasonPending},
		"Active key, Ready SecretConflict":        {state: v1.KeyActive, reason: v1.ReasonSecretConflict},
		"Active key, Ready Issued":                {state: v1.KeyActive, reason: v1.ReasonIssued},
		"Retiring key within grace, Ready Issued": {state: v1.KeyRetiring, reason: v1.ReasonIssued},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "app"}}
			sk.Status.Keys = []v1.PublicKey{{KeyID: id, PublicKey: pem, State: tc.state, NotAfter: &metav1.Time{Time: now.Add(time.Hour)}}}
			sk.Status.Conditions = []metav1.Condition{{Type: v1.ConditionReady, Status: metav1.ConditionFalse, Reason: tc.reason}}
			r, err := NewKeyRecord(sk, ParsePublicKey)
			if err != nil {
				t.Fatal(err)
			}
			if why := r.refusal(now); why != "" {
				t.Errorf("refused: %s", why)
			}
			if keys := r.usableKeys(now); len(keys) != 1 || keys[0].ID != id {
				t.Errorf("usable keys %+v", keys)
			}
		})
	}
}

// TestSlimServiceKeyKeepsTheRecord: the cache keeps ServiceKeys slimmed; the record
// built from the slim copy must equal the one built from the full object, for
// every field a grant is judged by, while what is dropped is gone.
func TestSlimServiceKeyKeepsTheRecord(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := keyutil.KeyID(&priv.PublicKey)
	pem, _ := keyutil.EncodePublicKey(&priv.PublicKey)
	created := metav1.NewTime(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	// Generation and the deletion timestamp are kept: refresh families are bound to the
	// generation, and a deleting key grants nothing.
	full := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "app", UID: "u1", ResourceVersion: "42",
		Generation: 7, DeletionTimestamp: &created, CreationTimestamp: created, Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
		Labels: map[string]string{"a": "b"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
	full.Spec = v1.ServiceKeySpec{Subject: "svc", Scopes: []string{"read"}, Audiences: []string{"https://api"},
		AllowedCIDRs: []string{"10.0.0.0/8"}, Suspended: true, Validity: &metav1.Duration{Duration: time.Hour},
		AccessTokenTTL: &metav1.Duration{Duration: time.Minute}, ClientSecret: &v1.ClientSecretSpec{Enabled: true},
		SecretTemplate: &v1.SecretTemplate{Annotations: map[string]string{"x": "y"}},
		RefreshTokens:  &v1.RefreshTokensSpec{TTL: metav1.Duration{Duration: 24 * time.Hour}}}
	full.Spec.PrivateKey.Size = 4096
	full.Status.Keys = []v1.PublicKey{{KeyID: id, PublicKey: pem, State: v1.KeyActive, NotAfter: &created}}
	full.Status.ClientSecretHash = "sha256:abc"
	full.Status.Conditions = []metav1.Condition{{Type: v1.ConditionReady, Status: metav1.ConditionTrue, Message: "long"}}
	out, err := SlimServiceKey(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	slim := out.(*v1.ServiceKey)
	if slim.Annotations != nil || slim.Labels != nil || slim.ManagedFields != nil || slim.Status.Conditions != nil || slim.Spec.SecretTemplate != nil {
		t.Errorf("slim copy keeps dropped fields: %+v", slim)
	}
	a, errA := NewKeyRecord(full, ParsePublicKey)
	b, errB := NewKeyRecord(slim, ParsePublicKey)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	a.verdict.Store(nil)
	b.verdict.Store(nil)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("records differ:\nfull %+v\nslim %+v", a, b)
	}
	if slim.Generation != 7 || slim.DeletionTimestamp == nil || slim.Spec.RefreshTokens == nil {
		t.Errorf("slim copy drops the generation, the deletion timestamp or refreshTokens: %+v", slim)
	}
}

// TestRecordRefusesADeletingServiceKey: with foreground deletion or a finalizer, a
// deleted ServiceKey stays (its deletionTimestamp set) until its Secret is gone;
// its grants end at once.
func TestRecordRefusesADeletingServiceKey(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	cases := map[string]struct {
		deleting *metav1.Time
		refused  bool
	}{
		"not deleted":        {nil, false},
		"deletion asked for": {&now, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "app", DeletionTimestamp: tc.deleting}}
			out, _ := SlimServiceKey(sk)
			r, err := NewKeyRecord(out.(*v1.ServiceKey), ParsePublicKey)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.refusal(now.Time) != ""; got != tc.refused {
				t.Errorf("refused = %v, want %v (%q)", got, tc.refused, r.refusal(now.Time))
			}
		})
	}
}
