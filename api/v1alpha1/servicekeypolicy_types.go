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

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ServiceKeyPolicySpec grants the namespaces it selects the privileges their
// ServiceKeys may carry. A ServiceKey is permitted when at least one policy selecting
// its namespace permits all of it; with no such policy it is not permitted at all.
type ServiceKeyPolicySpec struct {
	// NamespaceSelector selects the namespaces this policy applies to by their labels.
	// Required: `{}` selects every namespace, so a policy that applies cluster-wide says
	// so explicitly. The API server sets `kubernetes.io/metadata.name` on every
	// namespace, which selects one namespace by name.
	// +required
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions operator must be In, NotIn, Exists or DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="matchExpressions with In or NotIn need values; Exists and DoesNotExist take none"
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector"`

	// Allowed lists the scopes, audiences and subjects the selected namespaces' keys
	// may carry, and whether they may use client secrets.
	// +optional
	Allowed AllowedPrivileges `json:"allowed,omitempty"`

	// MaxValidity caps a key's lifetime: spec.validity, or spec.expiresAt measured from
	// the ServiceKey's creation. A key without expiry exceeds any cap. Unset: no cap.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="maxValidity must be a positive duration such as 2160h"
	MaxValidity *metav1.Duration `json:"maxValidity,omitempty"`

	// MaxAccessTokenTTL caps spec.accessTokenTTL. Unset: only the token server's own cap.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="maxAccessTokenTTL must be a positive duration such as 1h"
	MaxAccessTokenTTL *metav1.Duration `json:"maxAccessTokenTTL,omitempty"`

	// MinKeySize is the smallest RSA modulus, in bits, a key may have. Unset: any size
	// the ServiceKey API accepts.
	// +optional
	// +kubebuilder:validation:Enum=2048;3072;4096
	MinKeySize int32 `json:"minKeySize,omitempty"`
}

// AllowedPrivileges are patterns a ServiceKey's values must match. A pattern is an
// exact value or a prefix ending in `*`; `*` alone matches anything. Reserved scopes
// (`servicekey:...`) and subjects of other ServiceKeys (`system:servicekey:...`) match
// only an exact entry, never a wildcard.
type AllowedPrivileges struct {
	// Scopes a key may list in spec.scopes.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.all(s, s.matches('^[\\\\x21\\\\x23-\\\\x29\\\\x2b-\\\\x5b\\\\x5d-\\\\x7e]*\\\\*?$'))",message="each scope pattern must be a scope-token (printable ASCII without spaces, quotes or backslashes), optionally ending in '*'; '*' may appear only at the end"
	Scopes []string `json:"scopes,omitempty"`

	// Audiences a key may list in spec.audiences. Unset: only keys without
	// spec.audiences, whose tokens carry the token server's default audience.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.all(a, a.matches('^[^\\\\s*]*\\\\*?$'))",message="each audience pattern must have no white space and may contain '*' only at the end"
	Audiences []string `json:"audiences,omitempty"`

	// Subjects a key may name in spec.subject. The default subject,
	// system:servicekey:<namespace>:<name>, is always allowed.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.all(s, s.matches('^[^\\\\s*]*\\\\*?$'))",message="each subject pattern must have no white space and may contain '*' only at the end"
	Subjects []string `json:"subjects,omitempty"`

	// ClientSecret says whether keys may set spec.clientSecret.enabled.
	// +optional
	ClientSecret bool `json:"clientSecret,omitempty"`
}

// ServiceKeyPolicyStatus is what the controller observed about the policy.
type ServiceKeyPolicyStatus struct {
	// Conditions: `Ready` is True while the policy's selector is valid and selects at
	// least one namespace.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Namespaces is how many namespaces the policy selects now.
	// +optional
	Namespaces int32 `json:"namespaces,omitempty"`
}

// ServiceKeyPolicy is the cluster admin's grant of privileges to namespaces: which
// scopes, audiences and subjects the ServiceKeys in them may carry, and caps on their
// keys. The controller issues no key and the token server signs no token beyond what a
// policy allows now.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=skp,categories=servicekey-operator
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Namespaces",type=integer,description="Namespaces the policy selects",JSONPath=`.status.namespaces`
// +kubebuilder:printcolumn:name="Scopes",type=string,JSONPath=`.spec.allowed.scopes`
// +kubebuilder:printcolumn:name="Audiences",type=string,priority=1,JSONPath=`.spec.allowed.audiences`
// +kubebuilder:printcolumn:name="Subjects",type=string,priority=1,JSONPath=`.spec.allowed.subjects`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ServiceKeyPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what the policy allows.
	// +required
	Spec ServiceKeyPolicySpec `json:"spec"`

	// Status is what the controller observed.
	// +optional
	Status ServiceKeyPolicyStatus `json:"status,omitempty"`
}

// ServiceKeyPolicyList is a list of ServiceKeyPolicies.
//
// +kubebuilder:object:root=true
type ServiceKeyPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ServiceKeyPolicy `json:"items"`
}
