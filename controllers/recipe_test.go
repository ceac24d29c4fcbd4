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
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/docstest"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// recipeFile returns the file block named name of a page in docs/ (```yaml file=name),
// as the docs test reads it.
func recipeFile(t *testing.T, page, name string) string {
	t.Helper()
	p, err := docstest.ReadPage(testenv.RepoRoot(), filepath.Join("docs", page))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range p.Blocks {
		if b.Kind == docstest.File && b.File == name {
			return b.Text
		}
	}
	t.Fatalf("docs/%s has no block file=%s", page, name)
	return ""
}

// TestMultiTenantRecipe applies the policies of docs/operations.md's multi-tenant
// recipe as written and checks what its step 4 says.
func TestMultiTenantRecipe(t *testing.T) {
	ctx := context.Background()
	block := recipeFile(t, "operations.md", "policies.yaml")
	for _, doc := range strings.Split(block, "\n---\n") {
		p := &v1.ServiceKeyPolicy{}
		if err := yaml.UnmarshalStrict([]byte(doc), p); err != nil {
			t.Fatalf("recipe policy: %v\n%s", err, doc)
		}
		if err := k8s.Create(ctx, p); err != nil {
			t.Fatalf("apply recipe policy %s: %v", p.Name, err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "payments-prod", Labels: map[string]string{"team": "payments"}}}); err != nil {
		t.Fatal(err)
	}
	own := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "worker", Namespace: "payments-prod"}, Spec: v1.ServiceKeySpec{
		Scopes: []string{"payments:invoices:read"}, Audiences: []string{"https://payments.internal/api"}, Validity: dur(720 * time.Hour)}}
	other := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "thief", Namespace: "payments-prod"}, Spec: v1.ServiceKeySpec{
		Scopes: []string{"billing:read"}, Validity: dur(720 * time.Hour)}}
	for _, sk := range []*v1.ServiceKey{own, other} {
		if err := k8s.Create(ctx, sk); err != nil {
			t.Fatal(err)
		}
	}
	waitReady(t, "payments-prod", "worker", v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	got := waitReady(t, "payments-prod", "thief", v1.ReasonPolicyDenied, func(*v1.ServiceKey) bool { return true })
	want := "not allowed by any ServiceKeyPolicy selecting namespace payments-prod: scope billing:read (considered: payments)"
	if msg := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionReady).Message; msg != want {
		t.Errorf("message %q, want the recipe's %q", msg, want)
	}
}
