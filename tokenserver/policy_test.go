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
	"net/http"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

func teamPolicy(name string, scopes []string, minKeySize int32) *v1.ServiceKeyPolicy {
	return &v1.ServiceKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.ServiceKeyPolicySpec{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}},
		Allowed:           v1.AllowedPrivileges{Scopes: scopes}, MinKeySize: minKeySize,
	}}
}

// TestPolicyGate drives the gate through the informer events it gets in production
// and checks each answer, including that a cached verdict never survives a change.
func TestPolicyGate(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rec := &KeyRecord{ClientID: "a/app", Request: policy.Request{Namespace: "a", Name: "app", Scopes: []string{"read"}, KeySize: 3072},
		Keys: []PublicKey{{ID: "old", Key: &small.PublicKey}}}
	g := NewPolicyGate()
	check := func(step, wantCode string, keyIDs ...string) {
		t.Helper()
		e, _ := g.Check(rec, keyIDs)
		got := ""
		if e != nil {
			got = e.Code
		}
		if got != wantCode {
			t.Fatalf("%s: code %q, want %q (%v)", step, got, wantCode, e)
		}
	}
	check("namespace unknown", CodeTemporarilyUnavailable)
	g.NamespaceHandler().OnAdd(namespace("a", map[string]string{"team": "b"}), true)
	check("no policy", CodeUnauthorizedClient)
	g.PolicyHandler().OnAdd(teamPolicy("a", []string{"read"}, 0), true)
	check("policy selects another team", CodeUnauthorizedClient)
	g.NamespaceHandler().OnUpdate(nil, namespace("a", map[string]string{"team": "a"}))
	check("namespace relabelled", "")
	g.PolicyHandler().OnUpdate(nil, teamPolicy("a", []string{"write"}, 0))
	check("policy tightened", CodeInvalidScope)
	g.PolicyHandler().OnUpdate(nil, teamPolicy("a", []string{"read"}, 3072))
	check("the key named by the grant is below minKeySize", CodeUnauthorizedClient, "old")
	check("a client secret grant uses no key", "")
	g.PolicyHandler().OnDelete(toolscache.DeletedFinalStateUnknown{Key: "a", Obj: teamPolicy("a", []string{"read"}, 0)})
	check("policy deleted (tombstone)", CodeUnauthorizedClient)
	g.NamespaceHandler().OnDelete(namespace("a", nil))
	e, _ := g.Check(rec, nil)
	if e == nil || e.Status != http.StatusServiceUnavailable || e.RetryAfter <= 0 {
		t.Fatalf("namespace deleted: %+v, want 503 with Retry-After", e)
	}
	var nilGate *PolicyGate
	if v := nilGate.Verdict(rec); v.Allowed {
		t.Fatal("a nil gate permitted a key")
	}
}
