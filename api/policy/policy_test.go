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

package policy_test

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

func TestMatches(t *testing.T) {
	cases := map[string]struct {
		pattern, value, reserved string
		want                     bool
	}{
		"exact":                          {"read", "read", "", true},
		"exact differs":                  {"read", "reads", "", false},
		"prefix":                         {"invoices:*", "invoices:read", "", true},
		"prefix matches the bare prefix": {"invoices:*", "invoices:", "", true},
		"prefix does not match shorter":  {"invoices:*", "invoices", "", false},
		"star matches anything":          {"*", "admin", "", true},
		"star never matches reserved":    {"*", "servicekey:introspect", "servicekey:", false},
		"reserved prefix pattern":        {"servicekey:*", "servicekey:introspect", "servicekey:", false},
		"reserved exact":                 {"servicekey:introspect", "servicekey:introspect", "servicekey:", true},
		"star inside is literal":         {"a*b", "axb", "", false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := policy.Matches(tc.pattern, tc.value, tc.reserved); got != tc.want {
				t.Errorf("Matches(%q, %q) = %v", tc.pattern, tc.value, got)
			}
		})
	}
}

func compile(name string, spec v1.ServiceKeyPolicySpec) policy.Policy {
	if spec.NamespaceSelector == nil {
		spec.NamespaceSelector = &metav1.LabelSelector{}
	}
	return policy.Compile(&v1.ServiceKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec})
}

func TestEvaluate(t *testing.T) {
	year := 8760 * time.Hour
	req := policy.Request{Namespace: "ns", Name: "app", Scopes: []string{"read", "write"}, KeySize: 2048, AccessTokenTTL: time.Hour}
	cases := map[string]struct {
		labels   map[string]string
		policies []policy.Policy
		change   func(*policy.Request)
		allowed  bool
		message  string
		kinds    []policy.Kind
		// by and minKeySize are checked when by is set.
		by         string
		minKeySize int32
	}{
		"no policy": {message: "no ServiceKeyPolicy selects namespace ns", kinds: []policy.Kind{policy.KindNoPolicy}},
		"unknown namespace permits nothing, even to a negative selector": {
			labels: nil, message: "the labels of namespace ns are not known yet",
			policies: []policy.Policy{compile("not-restricted", v1.ServiceKeyPolicySpec{
				NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "restricted", Operator: metav1.LabelSelectorOpDoesNotExist}}},
				Allowed: v1.AllowedPrivileges{Scopes: []string{"*"}}})},
		},
		"negative selector excludes a labelled namespace": {
			labels:  map[string]string{"restricted": "true"},
			message: "no ServiceKeyPolicy selects namespace ns", kinds: []policy.Kind{policy.KindNoPolicy},
			policies: []policy.Policy{compile("not-restricted", v1.ServiceKeyPolicySpec{
				NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "restricted", Operator: metav1.LabelSelectorOpDoesNotExist}}},
				Allowed: v1.AllowedPrivileges{Scopes: []string{"*"}}})},
		},
		"first permitting policy by name, most lenient minKeySize": {
			policies: []policy.Policy{compile("b", v1.ServiceKeyPolicySpec{Allowed: v1.AllowedPrivileges{Scopes: []string{"*"}}, MinKeySize: 2048}),
				compile("a", v1.ServiceKeyPolicySpec{Allowed: v1.AllowedPrivileges{Scopes: []string{"read", "write"}}, MinKeySize: 3072})},
			change:  func(r *policy.Request) { r.KeySize = 4096 },
			allowed: true, by: "a", minKeySize: 2048,
		},
		"invalid selector ignored and named": {
			policies: []policy.Policy{compile("bad", v1.ServiceKeyPolicySpec{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"not a key!": "x"}}, Allowed: v1.AllowedPrivileges{Scopes: []string{"*"}}})},
			message: "no ServiceKeyPolicy selects namespace ns; ignored for an invalid namespaceSelector: bad",
			kinds:   []policy.Kind{policy.KindNoPolicy},
		},
		"every kind of gap": {
			policies: []policy.Policy{compile("tight", v1.ServiceKeyPolicySpec{Allowed: v1.AllowedPrivileges{Scopes: []string{"read"}},
				MinKeySize: 3072, MaxValidity: &metav1.Duration{Duration: time.Hour}, MaxAccessTokenTTL: &metav1.Duration{Duration: time.Minute}})},
			change: func(r *policy.Request) {
				r.Audiences, r.Subject, r.ClientSecret, r.Lifetime = []string{"https://x"}, "admin", true, &year
			},
			message: "not allowed by any ServiceKeyPolicy selecting namespace ns: scope write, audience https://x, subject admin, " +
				"key size 2048, validity 8760h0m0s, accessTokenTTL 1h0m0s, client secrets (considered: tight)",
			kinds: []policy.Kind{policy.KindScope, policy.KindAudience, policy.KindSubject, policy.KindKeySize,
				policy.KindValidity, policy.KindAccessTokenTTL, policy.KindClientSecret},
		},
		"only scopes": {
			policies: []policy.Policy{compile("p", v1.ServiceKeyPolicySpec{Allowed: v1.AllowedPrivileges{Scopes: []string{"read"}}})},
			message:  "not allowed by any ServiceKeyPolicy selecting namespace ns: scope write (considered: p)",
			kinds:    []policy.Kind{policy.KindScope},
		},
		"default subject spelled out is allowed": {
			policies: []policy.Policy{compile("p", v1.ServiceKeyPolicySpec{Allowed: v1.AllowedPrivileges{Scopes: []string{"*"}}})},
			change:   func(r *policy.Request) { r.Subject = "system:servicekey:ns:app" },
			allowed:  true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := req
			if tc.change != nil {
				tc.change(&r)
			}
			labels := tc.labels
			if labels == nil && tc.message != "the labels of namespace ns are not known yet" {
				labels = map[string]string{}
			}
			v := policy.Evaluate(r, labels, tc.policies)
			if tc.by != "" && (v.By != tc.by || v.MinKeySize != tc.minKeySize) {
				t.Errorf("by %q minKeySize %d, want %q %d", v.By, v.MinKeySize, tc.by, tc.minKeySize)
			}
			if v.Allowed != tc.allowed || v.Message() != tc.message || !slices.Equal(v.Kinds(), tc.kinds) {
				t.Errorf("allowed %v, message %q, kinds %v\nwant %v, %q, %v", v.Allowed, v.Message(), v.Kinds(), tc.allowed, tc.message, tc.kinds)
			}
			if tc.allowed && v.By == "" {
				t.Error("an allowed verdict names no policy")
			}
		})
	}
}
