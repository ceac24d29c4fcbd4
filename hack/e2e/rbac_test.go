//go:build e2e

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

package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/servicekey-operator/servicekey-operator/hack/stack"
)

// Scopes a permission is checked in: all namespaces, an application namespace, and
// the install namespace.
const (
	allNamespaces = "*"
	appNamespace  = "default"
)

// grant lists one resource's allowed verbs in the given scopes.
func grant(scopes []string, resource string, verbs ...string) []string {
	var out []string
	for _, s := range scopes {
		for _, v := range verbs {
			out = append(out, s+" "+resource+" "+v)
		}
	}
	return out
}

// TestLeastPrivilege asks the API server, for every resource it serves and every
// verb, whether each component's ServiceAccount may do it cluster-wide, in an
// application namespace and in the install namespace, and compares the answer with
// exactly what the component needs. Whatever an authenticated nobody may do too
// (self reviews) is left out. A permission added to the chart or a marker without
// updating this list fails the test.
func TestLeastPrivilege(t *testing.T) {
	everywhere := []string{allNamespaces, appNamespace, stack.Namespace}
	install := []string{stack.Namespace}
	cluster := []string{allNamespaces} // cluster-scoped resources
	editor := bindTenantEditor(t)
	tests := map[string]struct {
		user string
		want [][]string
	}{
		"controller": {user: installed.Controller.ServiceAccount, want: [][]string{
			grant(everywhere, "secrets", "create", "get", "list", "patch", "watch"),
			grant(everywhere, "servicekeys.auth.servicekey.dev", "get", "list", "watch"),
			grant(everywhere, "servicekeys.auth.servicekey.dev/status", "get", "patch"),
			grant(everywhere, "events.events.k8s.io", "create", "patch"),
			grant(install, "events", "create", "patch"),
			grant(install, "leases.coordination.k8s.io", "create", "delete", "get", "list", "patch", "update", "watch"),
			grant(cluster, "servicekeypolicies.auth.servicekey.dev", "get", "list", "watch"),
			grant(cluster, "servicekeypolicies.auth.servicekey.dev/status", "get", "patch"),
			grant(cluster, "namespaces", "get", "list", "watch"),
		}},
		"token server": {user: installed.TokenServer.ServiceAccount, want: [][]string{
			grant(everywhere, "servicekeys.auth.servicekey.dev", "get", "list", "watch"),
			grant(everywhere, "servicekeys.auth.servicekey.dev/status", "patch"),
			grant(cluster, "servicekeypolicies.auth.servicekey.dev", "list", "watch"),
			grant(cluster, "namespaces", "list", "watch"),
		}},
		// A namespace editor holding the chart's tenant edit role (what aggregation
		// into the built-in edit role gives): ServiceKeys in its namespace, never
		// their status, never a policy.
		"namespace editor": {user: editor, want: [][]string{
			grant([]string{appNamespace}, "servicekeys.auth.servicekey.dev",
				"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
		}},
	}
	cs := kubernetes.NewForConfigOrDie(env.Config)
	attrs := resourceAttributes(t, cs)
	t.Logf("asking about %d (scope, resource, verb) triples per identity", len(attrs))
	baseline := allowed(t, cs, "system:serviceaccount:default:nobody", attrs)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := slices.DeleteFunc(allowed(t, cs, tc.user, attrs), func(p string) bool { return slices.Contains(baseline, p) })
			want := slices.Concat(tc.want...)
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s may do more or less than it needs:\n  extra:   %v\n  missing: %v", tc.user, minus(got, want), minus(want, got))
			}
		})
	}
}

// TestTokenServerReadsOnlyItsSigningSecret uses the token server's identity for real
// requests: its signing-key Secret is readable, any other Secret is forbidden.
func TestTokenServerReadsOnlyItsSigningSecret(t *testing.T) {
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(env.Config)
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "database-password", Namespace: stack.Namespace}}
	if _, err := admin.CoreV1().Secrets(stack.Namespace).Create(ctx, other, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	ts := as(installed.TokenServer.ServiceAccount)
	if _, err := ts.CoreV1().Secrets(stack.Namespace).Get(ctx, "servicekey-token-signing", metav1.GetOptions{}); err != nil {
		t.Errorf("token server cannot read its signing key: %v", err)
	}
	tests := map[string]func() error{
		"get another Secret in its namespace": func() error {
			_, err := ts.CoreV1().Secrets(stack.Namespace).Get(ctx, other.Name, metav1.GetOptions{})
			return err
		},
		"list Secrets in its namespace": func() error {
			_, err := ts.CoreV1().Secrets(stack.Namespace).List(ctx, metav1.ListOptions{})
			return err
		},
		"get a key Secret in an application namespace": func() error {
			_, err := ts.CoreV1().Secrets(appNamespace).Get(ctx, "billing", metav1.GetOptions{})
			return err
		},
		"update a ServiceKey's spec": func() error {
			_, err := ts.CoreV1().RESTClient().Get().AbsPath("/apis/auth.servicekey.dev/v1alpha1/namespaces/default/servicekeys").DoRaw(ctx)
			if err != nil {
				return fmt.Errorf("list is allowed and should work: %w", err)
			}
			return ts.CoreV1().RESTClient().Put().AbsPath("/apis/auth.servicekey.dev/v1alpha1/namespaces/default/servicekeys/x").
				Body([]byte(`{"apiVersion":"auth.servicekey.dev/v1alpha1","kind":"ServiceKey","metadata":{"name":"x"}}`)).Do(ctx).Error()
		},
	}
	for name, try := range tests {
		t.Run(name, func(t *testing.T) {
			if err := try(); !apierrors.IsForbidden(err) {
				t.Errorf("want Forbidden, got %v", err)
			}
		})
	}
}

// TestControllerCannotWriteWhatItDoesNotNeed tries cluster-wide writes as the
// controller: deleting or updating Secrets, granting itself RBAC, deleting ServiceKeys.
func TestControllerCannotWriteWhatItDoesNotNeed(t *testing.T) {
	ctx := context.Background()
	c := as(installed.Controller.ServiceAccount)
	tests := map[string]func() error{
		"delete a Secret": func() error {
			return c.CoreV1().Secrets(stack.Namespace).Delete(ctx, "servicekey-token-signing", metav1.DeleteOptions{})
		},
		"update a Secret": func() error {
			s, err := c.CoreV1().Secrets(stack.Namespace).Get(ctx, "servicekey-token-signing", metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("get is allowed and should work: %w", err)
			}
			_, err = c.CoreV1().Secrets(stack.Namespace).Update(ctx, s, metav1.UpdateOptions{})
			return err
		},
		"bind itself to cluster-admin": func() error {
			_, err := c.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "escalate"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "servicekey-operator-controller", Namespace: stack.Namespace}},
			}, metav1.CreateOptions{})
			return err
		},
		"create a Pod": func() error {
			_, err := c.CoreV1().Pods(appNamespace).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
			return err
		},
		"delete a ServiceKey": func() error {
			return c.CoreV1().RESTClient().Delete().AbsPath("/apis/auth.servicekey.dev/v1alpha1/namespaces/default/servicekeys/billing").Do(ctx).Error()
		},
		"delete a namespace": func() error {
			return c.CoreV1().Namespaces().Delete(ctx, appNamespace, metav1.DeleteOptions{})
		},
	}
	for name, try := range tests {
		t.Run(name, func(t *testing.T) {
			if err := try(); !apierrors.IsForbidden(err) {
				t.Errorf("want Forbidden, got %v", err)
			}
		})
	}
}

// bindTenantEditor binds a ServiceAccount of appNamespace to the chart's tenant edit
// ClusterRole in appNamespace, as aggregation into the built-in edit role would (the
// local control plane runs no kube-controller-manager to aggregate), and checks the
// chart labels the tenant roles for aggregation. It returns the user name.
func bindTenantEditor(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	for role, labels := range map[string][]string{
		stack.Release + "-tenant-edit": {"rbac.authorization.k8s.io/aggregate-to-admin", "rbac.authorization.k8s.io/aggregate-to-edit"},
		stack.Release + "-tenant-view": {"rbac.authorization.k8s.io/aggregate-to-view"},
	} {
		cr, err := cs.RbacV1().ClusterRoles().Get(ctx, role, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the chart's tenant role: %v", err)
		}
		for _, l := range labels {
			if cr.Labels[l] != "true" {
				t.Errorf("ClusterRole %s lacks label %s=true", role, l)
			}
		}
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tenant-editor", Namespace: appNamespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: stack.Release + "-tenant-edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "tenant-editor", Namespace: appNamespace}},
	}
	if _, err := cs.RbacV1().RoleBindings(appNamespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return "system:serviceaccount:" + appNamespace + ":tenant-editor"
}

// as is a clientset acting as user through impersonation, as the local processes do.
func as(user string) *kubernetes.Clientset {
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	return kubernetes.NewForConfigOrDie(cfg)
}

// resourceAttributes lists every (resource or subresource, verb) the API server
// serves, in each scope, once across versions.
func resourceAttributes(t *testing.T, cs *kubernetes.Clientset) []authorizationv1.ResourceAttributes {
	t.Helper()
	_, lists, err := cs.Discovery().ServerGroupsAndResources()
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	seen := map[authorizationv1.ResourceAttributes]bool{}
	var attrs []authorizationv1.ResourceAttributes
	for _, list := range lists {
		group, _, found := strings.Cut(list.GroupVersion, "/")
		if !found {
			group = "" // the core group's GroupVersion is just "v1"
		}
		for _, r := range list.APIResources {
			resource, sub, _ := strings.Cut(r.Name, "/")
			scopes := []string{""}
			if r.Namespaced {
				scopes = []string{"", appNamespace, stack.Namespace}
			}
			for _, ns := range scopes {
				for _, verb := range r.Verbs {
					a := authorizationv1.ResourceAttributes{Namespace: ns, Group: group, Resource: resource, Subresource: sub, Verb: verb}
					if !seen[a] {
						seen[a] = true
						attrs = append(attrs, a)
					}
				}
			}
		}
	}
	if !seen[authorizationv1.ResourceAttributes{Namespace: appNamespace, Resource: "pods", Subresource: "exec", Verb: "create"}] {
		t.Fatalf("discovery did not list subresources (pods/exec); found %d resource/verb pairs", len(attrs))
	}
	return attrs
}

// allowed returns, sorted, the permissions the API server grants user as a
// ServiceAccount: "<scope> <resource>[.<group>][/<subresource>] <verb>".
func allowed(t *testing.T, cs *kubernetes.Clientset, user string, attrs []authorizationv1.ResourceAttributes) []string {
	t.Helper()
	ns, _, _ := strings.Cut(strings.TrimPrefix(user, "system:serviceaccount:"), ":")
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	var out []string
	for _, a := range attrs {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: &a}}
		res, err := cs.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		if !res.Status.Allowed {
			continue
		}
		scope := a.Namespace
		if scope == "" {
			scope = allNamespaces
		}
		name := a.Resource
		if a.Group != "" {
			name += "." + a.Group
		}
		if a.Subresource != "" {
			name += "/" + a.Subresource
		}
		out = append(out, scope+" "+name+" "+a.Verb)
	}
	sort.Strings(out)
	return out
}

func minus(a, b []string) []string {
	return slices.DeleteFunc(slices.Clone(a), func(s string) bool { return slices.Contains(b, s) })
}
