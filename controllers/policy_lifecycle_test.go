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
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// A key that becomes refused keeps its Secret and published keys; permitting it again
// brings back the same key, without re-keying. Each transition has its Event.
func TestNamespaceRelabelAndPolicyDeletion(t *testing.T) {
	const namespace = "policy-relabel"
	tenant := tenantNamespace(t, namespace, nil)
	p := createPolicy(t, namespace+"-team", namespace, v1.ServiceKeyPolicySpec{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}},
		Allowed:           v1.AllowedPrivileges{Scopes: []string{"invoices:*"}},
	})
	before := testutil.ToFloat64(metrics.PolicyDenied.WithLabelValues(string(policy.KindNoPolicy)))
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: namespace}, Spec: v1.ServiceKeySpec{Scopes: []string{"invoices:read"}}}
	if err := tenant.Create(context.Background(), sk); err != nil {
		t.Fatal(err)
	}
	waitReady(t, namespace, "app", v1.ReasonPolicyDenied, func(*v1.ServiceKey) bool { return true })
	// The counter moves after the status write the wait above saw: poll for it.
	testenv.Eventually(t, "servicekey_policy_denied_total{reason=NoPolicy} +1", func() (bool, string) {
		got := testutil.ToFloat64(metrics.PolicyDenied.WithLabelValues(string(policy.KindNoPolicy)))
		return got >= before+1, fmt.Sprintf("went from %v to %v", before, got)
	})

	relabel(t, namespace, map[string]string{"team": "payments"})
	issued := waitReady(t, namespace, "app", v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	id := activeKey(t, issued).KeyID
	if note := findEvent(t, issued, v1.EventPolicyAllowed); note != "permitted by ServiceKeyPolicy "+p.Name {
		t.Errorf("PolicyAllowed note %q", note)
	}

	relabel(t, namespace, map[string]string{"team": "other"})
	refused := waitReady(t, namespace, "app", v1.ReasonPolicyDenied, func(*v1.ServiceKey) bool { return true })
	if activeKey(t, refused).KeyID != id {
		t.Error("a refused key lost its published key")
	}
	if _, err := getSecret(namespace, "app"); err != nil {
		t.Errorf("a refused key lost its Secret: %v", err)
	}

	relabel(t, namespace, map[string]string{"team": "payments"})
	again := waitReady(t, namespace, "app", v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	if activeKey(t, again).KeyID != id {
		t.Error("permitting the key again re-keyed it")
	}

	if err := k8s.Delete(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	gone := waitReady(t, namespace, "app", v1.ReasonPolicyDenied, func(*v1.ServiceKey) bool { return true })
	if msg := meta.FindStatusCondition(gone.Status.Conditions, v1.ConditionReady).Message; msg != "no ServiceKeyPolicy selects namespace "+namespace {
		t.Errorf("after the policy was deleted: %q", msg)
	}
	if countEvents(t, gone, v1.EventPolicyDenied) < 2 {
		t.Error("each transition to refused should have its own PolicyDenied Event")
	}
}

// Tightening a policy refuses a key it used to permit, and widening it permits it.
func TestPolicyTightenedAndWidened(t *testing.T) {
	const namespace = "policy-tighten"
	tenant := tenantNamespace(t, namespace, nil)
	p := createPolicy(t, namespace+"-a", namespace, allow("read", "write"))
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: namespace}, Spec: v1.ServiceKeySpec{Scopes: []string{"read", "write"}}}
	if err := tenant.Create(context.Background(), sk); err != nil {
		t.Fatal(err)
	}
	waitReady(t, namespace, "app", v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	setScopes(t, p.Name, "read")
	got := waitReady(t, namespace, "app", v1.ReasonPolicyDenied, func(*v1.ServiceKey) bool { return true })
	want := fmt.Sprintf("not allowed by any ServiceKeyPolicy selecting namespace %s: scope write (considered: %s)", namespace, p.Name)
	if msg := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionReady).Message; msg != want {
		t.Errorf("message %q, want %q", msg, want)
	}
	setScopes(t, p.Name, "read", "write")
	waitReady(t, namespace, "app", v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })

	// Narrowing the selector so it no longer selects the namespace: the key must be
	// re-evaluated although the new selector does not match it.
	updatePolicy(t, p.Name, func(p *v1.ServiceKeyPolicy) { p.Spec.NamespaceSelector.MatchLabels["team"] = "elsewhere" })
	got = waitReady(t, namespace, "app", v1.ReasonPolicyDenied, func(*v1.ServiceKey) bool { return true })
	if msg := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionReady).Message; msg != "no ServiceKeyPolicy selects namespace "+namespace {
		t.Errorf("after narrowing the selector: %q", msg)
	}
}

// A tenant bound to the generated edit role manages ServiceKeys but can neither
// write their status (where the keys the token server trusts are published) nor
// create or change a policy.
func TestTenantCannotWriteStatusOrPolicies(t *testing.T) {
	const namespace = "policy-rbac"
	tenant := tenantNamespace(t, namespace, map[string]string{openLabel: "true"})
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: namespace}}
	if err := tenant.Create(context.Background(), sk); err != nil {
		t.Fatal(err)
	}
	waitReady(t, namespace, "app", v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	patch := client.RawPatch(types.MergePatchType, []byte(`{"status":{"subject":"system:masters"}}`))
	if err := tenant.Status().Patch(context.Background(), sk, patch); !apierrors.IsForbidden(err) {
		t.Errorf("tenant patched status: %v", err)
	}
	p := allow("*")
	if err := tenant.Create(context.Background(), &v1.ServiceKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: "mine"}, Spec: p}); !apierrors.IsForbidden(err) {
		t.Errorf("tenant created a policy: %v", err)
	}
	if err := tenant.Patch(context.Background(), &v1.ServiceKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: "open"}},
		client.RawPatch(types.MergePatchType, []byte(`{"spec":{"allowed":{"scopes":["servicekey:introspect"]}}}`))); !apierrors.IsForbidden(err) {
		t.Errorf("tenant changed a policy: %v", err)
	}
}

// The policy's own status says how many namespaces it selects, and warns when it
// selects none or cannot be used, with an Event.
func TestPolicyStatus(t *testing.T) {
	const namespace = "policy-status"
	tenantNamespace(t, namespace, nil)
	p := createPolicy(t, namespace+"-a", namespace, allow("*"))
	waitPolicy(t, p.Name, v1.ReasonPolicyActive, "selects 1 namespace(s)")
	nothing := createPolicy(t, namespace+"-none", namespace, v1.ServiceKeyPolicySpec{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "nobody"}}})
	got := waitPolicy(t, nothing.Name, v1.ReasonSelectsNothing, "namespaceSelector selects no namespace; this policy permits nothing")
	findPolicyEvent(t, got, v1.ReasonSelectsNothing)
	relabel(t, namespace, map[string]string{"team": "nobody"})
	waitPolicy(t, nothing.Name, v1.ReasonPolicyActive, "selects 1 namespace(s)")
}

func relabel(t *testing.T, namespace string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: namespace}, ns); err != nil {
		t.Fatal(err)
	}
	for k, v := range labels {
		ns.Labels[k] = v
	}
	if err := k8s.Update(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
}

func setScopes(t *testing.T, name string, scopes ...string) {
	t.Helper()
	updatePolicy(t, name, func(p *v1.ServiceKeyPolicy) { p.Spec.Allowed.Scopes = scopes })
}

// updatePolicy changes a policy, retrying when the write conflicts with the
// controller's status writes.
func updatePolicy(t *testing.T, name string, change func(*v1.ServiceKeyPolicy)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		p := &v1.ServiceKeyPolicy{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, p); err != nil {
			return err
		}
		change(p)
		return k8s.Update(context.Background(), p)
	})
	if err != nil {
		t.Fatalf("update policy %s: %v", name, err)
	}
}

func waitPolicy(t *testing.T, name, reason, message string) *v1.ServiceKeyPolicy {
	t.Helper()
	p := &v1.ServiceKeyPolicy{}
	eventually(t, "policy "+name+" "+reason, func() (bool, string) {
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, p); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(p.Status.Conditions, v1.ConditionReady)
		if c == nil || c.ObservedGeneration != p.Generation {
			return false, fmt.Sprintf("%+v", c)
		}
		return c.Reason == reason && c.Message == message, c.Reason + ": " + c.Message
	})
	return p
}

func findPolicyEvent(t *testing.T, p *v1.ServiceKeyPolicy, reason string) {
	t.Helper()
	eventually(t, "event "+reason+" on policy "+p.Name, func() (bool, string) {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list); err != nil {
			return false, err.Error()
		}
		for _, e := range list.Items {
			if e.Regarding.UID == p.UID && e.Reason == reason {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(list.Items))
	})
}

func countEvents(t *testing.T, sk *v1.ServiceKey, reason string) int {
	t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(sk.Namespace)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Regarding.UID == sk.UID && e.Reason == reason {
			n += max(1, int(e.DeprecatedCount))
			if e.Series != nil {
				n = max(n, int(e.Series.Count))
			}
		}
	}
	return n
}
