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

package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// refuse is testenv.Refuse for a test: the policy is lifted at the latest when the
// test ends.
func refuse(t *testing.T, name, group, resource, expression string, probe func() bool) (lift func()) {
	t.Helper()
	lifter, err := testenv.Refuse(context.Background(), k8s, name, group, resource, expression, probe)
	if err != nil {
		t.Fatal(err)
	}
	lift = func() {
		if err := lifter(); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(lift)
	return lift
}

// reconcileErrors is controller-runtime's count of failed reconciles of ServiceKeys.
func reconcileErrors(t *testing.T) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_errors_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "servicekey" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// waitRefusals waits until the controller has failed n more reconciles than before.
func waitRefusals(t *testing.T, before float64, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d refused reconciles", n), func() (bool, string) {
		got := reconcileErrors(t)
		return got >= before+float64(n), fmt.Sprintf("%v so far", got-before)
	})
}

// refuseKeySecrets refuses, through an admission policy named policy, every write of
// a Secret labelled as ServiceKey name's, until the returned lift (or the test's end).
func refuseKeySecrets(t *testing.T, policy, name string) (lift func()) {
	t.Helper()
	lifter, err := testenv.RefuseKeySecrets(context.Background(), k8s, policy, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	lift = func() {
		if err := lifter(); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(lift)
	return lift
}

func watchKeys(t *testing.T, name string) *testenv.KeyHistory {
	t.Helper()
	return testenv.WatchKeysFor(t, adminConfig, testScheme, ns, name)
}

func secretKeyID(t *testing.T, name string) string {
	t.Helper()
	s, err := getSecret(ns, name)
	if err != nil {
		t.Fatalf("get Secret %s: %v", name, err)
	}
	return testenv.KeyIDOf(s.Data[v1.SecretKeyPrivateKey])
}

// TestStatusWritesRefused: while the API server refuses the ServiceKey's status, no
// key reaches a Secret, neither at issue nor at rotation; once allowed, each yields
// exactly one key, and every key the Secret ever held was published first.
func TestStatusWritesRefused(t *testing.T) {
	const name = "faulty-status"
	ctx := context.Background()
	probe := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: name + "-probe", Namespace: ns}}
	if err := k8s.Create(ctx, probe); err != nil {
		t.Fatal(err)
	}
	statusRefused := func(key client.ObjectKey) func() bool {
		return func() bool {
			p := &v1.ServiceKey{}
			if err := k8s.Get(ctx, key, p); err != nil {
				return false
			}
			p.Status.Subject = fmt.Sprint(pokes.Add(1))
			return apierrors.IsForbidden(k8s.Status().Update(ctx, p))
		}
	}
	lift := refuse(t, "refuse-status", v1.GroupVersion.Group, "servicekeys/status",
		"object.metadata.name.startsWith('"+name+"')", statusRefused(client.ObjectKeyFromObject(probe)))
	// Only the ServiceKey under test may fail from here on: the error count is its own.
	if err := k8s.Delete(ctx, probe); err != nil {
		t.Fatal(err)
	}
	h := watchKeys(t, name)
	before := reconcileErrors(t)
	keysBefore := generated.n.Load()
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if err := k8s.Create(ctx, sk); err != nil {
		t.Fatal(err)
	}
	waitRefusals(t, before, 3)
	if _, err := getSecret(ns, name); !apierrors.IsNotFound(err) {
		t.Errorf("a Secret exists while no key could be published: %v", err)
	}
	findEvent(t, sk, v1.EventStatusWriteFailed)
	lift()
	sk = waitReady(t, ns, name, v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	first := activeKey(t, sk).KeyID
	if n := generated.n.Load() - keysBefore; n != 1 {
		t.Errorf("%d key pairs generated for one issue retried through refused status writes, want 1", n)
	}

	lift = refuse(t, "refuse-status-again", v1.GroupVersion.Group, "servicekeys/status",
		"object.metadata.name.startsWith('"+name+"')", statusRefused(client.ObjectKeyFromObject(sk)))
	before, keysBefore = reconcileErrors(t), generated.n.Load()
	update(t, ns, name, func(sk *v1.ServiceKey) { sk.Annotations = map[string]string{v1.AnnotationRotate: "1"} })
	waitRefusals(t, before, 3)
	if got := secretKeyID(t, name); got != first {
		t.Errorf("the Secret changed to %s while the status was refused", got)
	}
	lift()
	sk = waitReady(t, ns, name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return activeKey(t, sk).KeyID != first })
	if n := generated.n.Load() - keysBefore; n != 1 {
		t.Errorf("%d key pairs generated for one rotation retried through refused status writes, want 1", n)
	}
	if got := secretKeyID(t, name); got != activeKey(t, sk).KeyID {
		t.Errorf("the Secret holds %s, the Active key is %s", got, activeKey(t, sk).KeyID)
	}
	eventually(t, "the watch saw the rotated Secret", func() (bool, string) {
		return len(h.HandedOut()) == 2, fmt.Sprint(h.HandedOut())
	})
	if err := h.Check(); err != nil {
		t.Error(err)
	}
	waitCondition(t, ns, name, v1.ConditionSynced, v1.ReasonSynced)
	if got := h.HandedOut(); len(got) != 2 || got[0] != first || got[1] != activeKey(t, sk).KeyID {
		t.Errorf("the Secret held %v for one issue and one rotation, want [%s %s]", got, first, activeKey(t, sk).KeyID)
	}
}

// TestSecretWritesRefused: while the API server refuses the key's Secret, a rotation
// publishes its new key as Pending and stops there: the Active key keeps working
// (Ready True, still in the Secret) and Synced says why. Once allowed, the same
// staged key is written and promoted: one rotation, one key.
func TestSecretWritesRefused(t *testing.T) {
	const name = "faulty-secret"
	sk := create(t, newKey(name))
	first := activeKey(t, sk).KeyID
	h := watchKeys(t, name)
	lift := refuseKeySecrets(t, "refuse-secret", name)
	update(t, ns, name, func(sk *v1.ServiceKey) { sk.Annotations = map[string]string{v1.AnnotationRotate: "1"} })
	c := waitCondition(t, ns, name, v1.ConditionSynced, v1.ReasonReconcileError)
	if !strings.Contains(c.Message, "refused by fault injection refuse-secret") {
		t.Errorf("Synced message %q does not say why", c.Message)
	}
	sk = get(t, ns, name)
	if r := meta.FindStatusCondition(sk.Status.Conditions, v1.ConditionReady); r.Status != metav1.ConditionTrue || activeKey(t, sk).KeyID != first {
		t.Errorf("Ready %s/%s, Active %s; want True and %s", r.Status, r.Reason, activeKey(t, sk).KeyID, first)
	}
	if got := secretKeyID(t, name); got != first {
		t.Errorf("the Secret holds %s, want the Active key %s", got, first)
	}
	var pending string
	for _, k := range sk.Status.Keys {
		if k.State == v1.KeyPending {
			pending = k.KeyID
		}
	}
	if pending == "" {
		t.Fatalf("no Pending key published: %v", keyStates(sk))
	}
	findEvent(t, sk, v1.EventSecretWriteFailed)
	lift()
	sk = waitReady(t, ns, name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return activeKey(t, sk).KeyID != first })
	if got := activeKey(t, sk).KeyID; got != pending {
		t.Errorf("Active key %s after the fault, want the staged Pending key %s", got, pending)
	}
	waitCondition(t, ns, name, v1.ConditionSynced, v1.ReasonSynced)
	eventually(t, "the watch saw the rotated Secret", func() (bool, string) {
		got := h.HandedOut()
		return len(got) > 0 && got[len(got)-1] == pending, fmt.Sprint(got)
	})
	if err := h.Check(); err != nil {
		t.Error(err)
	}
	if got := h.HandedOut(); len(got) != 2 || got[0] != first {
		t.Errorf("the Secret held %v for one rotation, want [%s %s]", got, first, pending)
	}
}
