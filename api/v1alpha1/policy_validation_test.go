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

package v1alpha1_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// TestPolicyValidation proves that the API server refuses malformed policies at apply
// time with the field and a clear message, and accepts well-formed ones.
func TestPolicyValidation(t *testing.T) {
	all := &metav1.LabelSelector{}
	cases := map[string]struct {
		spec    v1.ServiceKeyPolicySpec
		field   string // "" = accepted
		message string
	}{
		"well formed": {spec: v1.ServiceKeyPolicySpec{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}},
			Allowed: v1.AllowedPrivileges{Scopes: []string{"*", "invoices:*", "servicekey:introspect"}, Audiences: []string{"https://a.test/*"},
				Subjects: []string{"spiffe://example.org/*"}, ClientSecret: true},
			MaxValidity: dur(2160 * time.Hour), MaxAccessTokenTTL: dur(time.Hour), MinKeySize: 3072}},
		"no namespaceSelector": {spec: v1.ServiceKeyPolicySpec{}, field: "spec.namespaceSelector", message: "Required value"},
		"star in the middle of a scope": {
			spec:  v1.ServiceKeyPolicySpec{NamespaceSelector: all, Allowed: v1.AllowedPrivileges{Scopes: []string{"*:read"}}},
			field: "spec.allowed.scopes", message: "'*' may appear only at the end",
		},
		"scope pattern with a space": {
			spec:  v1.ServiceKeyPolicySpec{NamespaceSelector: all, Allowed: v1.AllowedPrivileges{Scopes: []string{"a b"}}},
			field: "spec.allowed.scopes", message: "each scope pattern must be a scope-token",
		},
		"two stars in an audience": {
			spec:  v1.ServiceKeyPolicySpec{NamespaceSelector: all, Allowed: v1.AllowedPrivileges{Audiences: []string{"https://*.test/*"}}},
			field: "spec.allowed.audiences", message: "may contain '*' only at the end",
		},
		"subject pattern with white space": {
			spec:  v1.ServiceKeyPolicySpec{NamespaceSelector: all, Allowed: v1.AllowedPrivileges{Subjects: []string{"a b*"}}},
			field: "spec.allowed.subjects", message: "may contain '*' only at the end",
		},
		"zero maxValidity": {
			spec:  v1.ServiceKeyPolicySpec{NamespaceSelector: all, MaxValidity: dur(0)},
			field: "spec.maxValidity", message: "maxValidity must be a positive duration",
		},
		"negative maxAccessTokenTTL": {
			spec:  v1.ServiceKeyPolicySpec{NamespaceSelector: all, MaxAccessTokenTTL: dur(-time.Hour)},
			field: "spec.maxAccessTokenTTL", message: "maxAccessTokenTTL must be a positive duration",
		},
		"minKeySize 1024": {
			spec:  v1.ServiceKeyPolicySpec{NamespaceSelector: all, MinKeySize: 1024},
			field: "spec.minKeySize", message: `supported values: "2048", "3072", "4096"`,
		},
		"unknown selector operator": {
			spec: v1.ServiceKeyPolicySpec{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "team", Operator: "Matches", Values: []string{"a"}}}}},
			field: "spec.namespaceSelector", message: "matchExpressions operator must be In, NotIn, Exists or DoesNotExist",
		},
		"In without values": {
			spec: v1.ServiceKeyPolicySpec{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "team", Operator: metav1.LabelSelectorOpIn}}}},
			field: "spec.namespaceSelector", message: "matchExpressions with In or NotIn need values",
		},
		"Exists with values": {
			spec: v1.ServiceKeyPolicySpec{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "team", Operator: metav1.LabelSelectorOpExists, Values: []string{"a"}}}}},
			field: "spec.namespaceSelector", message: "matchExpressions with In or NotIn need values",
		},
	}
	n := 0
	for name, tc := range cases {
		n++
		t.Run(name, func(t *testing.T) {
			p := &v1.ServiceKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("validation-%d", n)}, Spec: tc.spec}
			err := k8s.Create(context.Background(), p)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("refused a well-formed policy: %v", err)
				}
				return
			}
			assertInvalid(t, err, tc.field, tc.message)
		})
	}
}
