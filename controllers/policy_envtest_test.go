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
	"maps"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// tenantUser is bound, per test namespace, to nothing but the generated tenant edit
// ClusterRole (config/rbac/tenant-edit): every ServiceKey of the policy tests is
// created the way a namespace editor would create it.
const tenantUser = "tenant@example.com"

// caseLabel puts a namespace under one test case's policies only.
const caseLabel = "servicekey.test/case"

var tenantRoleOnce sync.Once

// tenantNamespace creates a namespace with labels, binds tenantUser to the generated
// tenant edit role in it, and returns a client acting as tenantUser.
func tenantNamespace(t *testing.T, name string, labels map[string]string) client.Client {
	t.Helper()
	ctx := context.Background()
	tenantRoleOnce.Do(func() {
		data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "tenant-edit", "role.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		role := &rbacv1.ClusterRole{}
		if err := yaml.Unmarshal(data, role); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Create(ctx, role); err != nil {
			t.Fatal(err)
		}
	})
	all := map[string]string{caseLabel: name}
	maps.Copy(all, labels)
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: all}}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tenant", Namespace: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "servicekey-operator-tenant-edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: tenantUser}},
	}
	if err := k8s.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(adminConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: tenantUser}
	c, err := client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// createPolicy creates a cluster-scoped policy that selects only namespaces labelled
// for the case (plus whatever its own selector asks), and deletes it after the test.
func createPolicy(t *testing.T, name, caseName string, spec v1.ServiceKeyPolicySpec) *v1.ServiceKeyPolicy {
	t.Helper()
	sel := spec.NamespaceSelector.DeepCopy()
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[caseLabel] = caseName
	spec.NamespaceSelector = sel
	p := &v1.ServiceKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatalf("create policy %s: %v", name, err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	return p
}

func allow(scopes ...string) v1.ServiceKeyPolicySpec {
	return v1.ServiceKeyPolicySpec{NamespaceSelector: &metav1.LabelSelector{}, Allowed: v1.AllowedPrivileges{Scopes: scopes}}
}

func TestPolicyCases(t *testing.T) {
	cases := map[string]struct {
		nsLabels map[string]string
		policies []v1.ServiceKeyPolicySpec // named <namespace>-a, -b, ...
		key      func(*v1.ServiceKey)
		// want is "" for Issued, else the exact PolicyDenied message (%[1]s: namespace).
		want string
	}{
		"exact scope": {policies: []v1.ServiceKeyPolicySpec{allow("read")}, key: scopes("read")},
		"prefix scope": {
			policies: []v1.ServiceKeyPolicySpec{allow("invoices:*")}, key: scopes("invoices:read", "invoices:write"),
		},
		"prefix does not match another scope": {
			policies: []v1.ServiceKeyPolicySpec{allow("invoices:*")}, key: scopes("invoices:read", "admin"),
			want: "not allowed by any ServiceKeyPolicy selecting namespace %[1]s: scope admin (considered: %[1]s-a)",
		},
		"star never matches a reserved scope": {
			policies: []v1.ServiceKeyPolicySpec{allow("*")}, key: scopes("read", "servicekey:introspect"),
			want: "not allowed by any ServiceKeyPolicy selecting namespace %[1]s: scope servicekey:introspect (considered: %[1]s-a)",
		},
		"reserved scope listed exactly": {
			policies: []v1.ServiceKeyPolicySpec{allow("servicekey:introspect")}, key: scopes("servicekey:introspect"),
		},
		"two policies, only one permits": {
			policies: []v1.ServiceKeyPolicySpec{allow("read"), allow("read", "write")}, key: scopes("read", "write"),
		},
		"two policies, each permits a part": {
			policies: []v1.ServiceKeyPolicySpec{allow("read"), allow("write")}, key: scopes("read", "write"),
			want: "no single ServiceKeyPolicy selecting namespace %[1]s allows all of it: %[1]s-a does not allow scope write; %[1]s-b does not allow scope read",
		},
		"no policy selects the namespace": {
			policies: []v1.ServiceKeyPolicySpec{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "other"}},
				Allowed: v1.AllowedPrivileges{Scopes: []string{"*"}}}},
			key:  scopes("read"),
			want: "no ServiceKeyPolicy selects namespace %[1]s",
		},
		"negative selector excludes the namespace": {
			nsLabels: map[string]string{"restricted": "true"},
			policies: []v1.ServiceKeyPolicySpec{{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "restricted", Operator: metav1.LabelSelectorOpDoesNotExist}}},
				Allowed: v1.AllowedPrivileges{Scopes: []string{"*"}}}},
			key:  scopes("read"),
			want: "no ServiceKeyPolicy selects namespace %[1]s",
		},
		"selector by matchExpressions": {
			nsLabels: map[string]string{"team": "payments"},
			policies: []v1.ServiceKeyPolicySpec{{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"payments", "billing"}}}},
				Allowed: v1.AllowedPrivileges{Scopes: []string{"*"}}}},
			key: scopes("read"),
		},
		"audience not allowed": {
			policies: []v1.ServiceKeyPolicySpec{allow("*")},
			key:      func(sk *v1.ServiceKey) { sk.Spec.Audiences = []string{"https://x"} },
			want:     "not allowed by any ServiceKeyPolicy selecting namespace %[1]s: audience https://x (considered: %[1]s-a)",
		},
		"audience prefix allowed": {
			policies: []v1.ServiceKeyPolicySpec{{NamespaceSelector: &metav1.LabelSelector{},
				Allowed: v1.AllowedPrivileges{Audiences: []string{"https://billing.internal/*"}}}},
			key: func(sk *v1.ServiceKey) { sk.Spec.Audiences = []string{"https://billing.internal/api"} },
		},
		"custom subject allowed by pattern": {
			policies: []v1.ServiceKeyPolicySpec{{NamespaceSelector: &metav1.LabelSelector{},
				Allowed: v1.AllowedPrivileges{Subjects: []string{"spiffe://example.org/*"}}}},
			key: func(sk *v1.ServiceKey) { sk.Spec.Subject = "spiffe://example.org/billing" },
		},
		"custom subject not allowed": {
			policies: []v1.ServiceKeyPolicySpec{allow("*")},
			key:      func(sk *v1.ServiceKey) { sk.Spec.Subject = "admin" },
			want:     "not allowed by any ServiceKeyPolicy selecting namespace %[1]s: subject admin (considered: %[1]s-a)",
		},
		"another key's subject needs an exact entry": {
			policies: []v1.ServiceKeyPolicySpec{{NamespaceSelector: &metav1.LabelSelector{},
				Allowed: v1.AllowedPrivileges{Subjects: []string{"system:*"}}}},
			key:  func(sk *v1.ServiceKey) { sk.Spec.Subject = "system:servicekey:kube-system:admin" },
			want: "not allowed by any ServiceKeyPolicy selecting namespace %[1]s: subject system:servicekey:kube-system:admin (considered: %[1]s-a)",
		},
		"key size below minKeySize": {
			policies: []v1.ServiceKeyPolicySpec{{NamespaceSelector: &metav1.LabelSelector{}, MinKeySize: 3072}},
			key:      func(*v1.ServiceKey) {},
			want:     "not allowed by any ServiceKeyPolicy selecting namespace %[1]s: key size 2048 (considered: %[1]s-a)",
		},
		"validity above maxValidity": {
			policies: []v1.ServiceKeyPolicySpec{{NamespaceSelector: &metav1.LabelSelector{}, MaxValidity: dur(720 * time.Hour)}},
			key:      func(sk *v1.ServiceKey) { sk.Spec.Validity = dur(8760 * time.Hour) },
			want:     "not allowed by any ServiceKeyPolicy selecting namespace %[1]s: validity 8760h0m0s (considered: %[1]s-a)",
		},
		"no expiry under maxValidity": {
			policies: []v1.ServiceKeyPolicySpec{{NamespaceSelector: &metav1.LabelSelector{}, MaxValidity: dur(720 * time.Hour)}},
			key:      func(*v1.ServiceKey) {},
			want:     "not allowed by any ServiceKeyPolicy selecting namespace %[1]s: a key without expiry (considered: %[1]s-a)",
		},
		"accessTokenTTL above the cap": {
			policies: []v1.ServiceKeyPolicySpec{{NamespaceSelector: &metav1.LabelSelector{}, MaxAccessTokenTTL: dur(30 * time.Minute)}},
			key:      func(*v1.ServiceKey) {},
			want:     "not allowed by any ServiceKeyPolicy selecting namespace %[1]s: accessTokenTTL 1h0m0s (considered: %[1]s-a)",
		},
		"client secret not allowed": {
			policies: []v1.ServiceKeyPolicySpec{allow()},
			key:      func(sk *v1.ServiceKey) { sk.Spec.ClientSecret = &v1.ClientSecretSpec{Enabled: true} },
			want:     "not allowed by any ServiceKeyPolicy selecting namespace %[1]s: client secrets (considered: %[1]s-a)",
		},
		"every cap met": {
			policies: []v1.ServiceKeyPolicySpec{{NamespaceSelector: &metav1.LabelSelector{}, MinKeySize: 3072,
				MaxValidity: dur(720 * time.Hour), MaxAccessTokenTTL: dur(time.Hour), Allowed: v1.AllowedPrivileges{ClientSecret: true}}},
			key: func(sk *v1.ServiceKey) {
				sk.Spec.PrivateKey.Size = 3072
				sk.Spec.Validity = dur(720 * time.Hour)
				sk.Spec.ClientSecret = &v1.ClientSecretSpec{Enabled: true}
			},
		},
	}
	i := 0
	for name, tc := range cases {
		i++
		namespace := fmt.Sprintf("policy-case-%d", i)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tenant := tenantNamespace(t, namespace, tc.nsLabels)
			for j, spec := range tc.policies {
				createPolicy(t, fmt.Sprintf("%s-%c", namespace, 'a'+j), namespace, spec)
			}
			sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: namespace}}
			tc.key(sk)
			if err := tenant.Create(context.Background(), sk); err != nil {
				t.Fatalf("create as tenant: %v", err)
			}
			if tc.want == "" {
				waitReady(t, namespace, "app", v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
				return
			}
			got := waitReady(t, namespace, "app", v1.ReasonPolicyDenied, func(*v1.ServiceKey) bool { return true })
			msg := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionReady).Message
			if want := fmt.Sprintf(tc.want, namespace); msg != want {
				t.Errorf("message\n got %q\nwant %q", msg, want)
			}
			if len(got.Status.Keys) != 0 {
				t.Errorf("a refused ServiceKey published keys: %v", keyStates(got))
			}
			if _, err := getSecret(namespace, "app"); !apierrors.IsNotFound(err) {
				t.Errorf("a refused ServiceKey got a Secret (err %v)", err)
			}
			findEvent(t, got, v1.EventPolicyDenied)
		})
	}
}

// scopes sets spec.scopes.
func scopes(s ...string) func(*v1.ServiceKey) {
	return func(sk *v1.ServiceKey) { sk.Spec.Scopes = s }
}
