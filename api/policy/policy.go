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

// Package policy decides whether ServiceKeyPolicies permit a ServiceKey. The
// controller and the token server both call it, so a key the controller reports as
// refused is exactly the key the token server refuses. It is pure: the caller
// supplies the namespace's labels and the policies.
package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// Kind names one kind of privilege a policy grants; also the `reason` label of the
// servicekey_policy_denied_total metric (a bounded set).
type Kind string

// Kinds of privilege, in the order messages name them.
const (
	KindNoPolicy       Kind = "NoPolicy"
	KindScope          Kind = "Scope"
	KindAudience       Kind = "Audience"
	KindSubject        Kind = "Subject"
	KindKeySize        Kind = "KeySize"
	KindValidity       Kind = "Validity"
	KindAccessTokenTTL Kind = "AccessTokenTTL"
	KindClientSecret   Kind = "ClientSecret"
)

// Reserved prefixes match only exact policy entries, never a wildcard: reserved
// scopes grant powers over the token server itself (servicekey:introspect), and
// system:servicekey: subjects are other ServiceKeys' identities.
const (
	ReservedScopePrefix   = "servicekey:"
	ReservedSubjectPrefix = v1.SubjectPrefix
)

// Gap is one thing a ServiceKey asks for that a policy does not allow.
type Gap struct {
	Kind  Kind
	Value string
}

// String is how messages name the gap, e.g. "scope admin" or "key size 2048".
func (g Gap) String() string {
	switch g.Kind {
	case KindScope:
		return "scope " + g.Value
	case KindAudience:
		return "audience " + g.Value
	case KindSubject:
		return "subject " + g.Value
	case KindKeySize:
		return "key size " + g.Value
	case KindValidity:
		if g.Value == "" {
			return "a key without expiry"
		}
		return "validity " + g.Value
	case KindAccessTokenTTL:
		return "accessTokenTTL " + g.Value
	case KindClientSecret:
		return "client secrets"
	}
	return string(g.Kind)
}

// Request is what a ServiceKey asks for, the part policies judge.
type Request struct {
	Namespace, Name string
	// Subject is spec.subject; "" means the default subject, always allowed.
	Subject   string
	Scopes    []string
	Audiences []string
	KeySize   int32
	// Lifetime is spec.validity, or spec.expiresAt less the creation time; nil: no expiry.
	Lifetime       *time.Duration
	AccessTokenTTL time.Duration
	ClientSecret   bool
}

// DefaultAccessTokenTTL is the ServiceKey API's default accessTokenTTL.
const DefaultAccessTokenTTL = time.Hour

// RequestOf reads a ServiceKey's spec, applying the API's defaults.
func RequestOf(sk *v1.ServiceKey) Request {
	r := Request{
		Namespace: sk.Namespace, Name: sk.Name, Subject: sk.Spec.Subject,
		Scopes: sk.Spec.Scopes, Audiences: sk.Spec.Audiences,
		KeySize: sk.Spec.PrivateKey.Size, AccessTokenTTL: DefaultAccessTokenTTL,
		ClientSecret: sk.Spec.ClientSecret != nil && sk.Spec.ClientSecret.Enabled,
	}
	if r.KeySize == 0 {
		r.KeySize = 2048
	}
	if sk.Spec.AccessTokenTTL != nil {
		r.AccessTokenTTL = sk.Spec.AccessTokenTTL.Duration
	}
	switch {
	case sk.Spec.Validity != nil:
		r.Lifetime = &sk.Spec.Validity.Duration
	case sk.Spec.ExpiresAt != nil:
		d := sk.Spec.ExpiresAt.Sub(sk.CreationTimestamp.Time)
		r.Lifetime = &d
	}
	return r
}

// Namespace is an empty Namespace read as metadata only: labels are all that policies
// need of namespaces, so the controller and the token server cache no more.
func Namespace() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return m
}

// NamespaceList is an empty list of Namespaces as metadata only.
func NamespaceList() *metav1.PartialObjectMetadataList {
	l := &metav1.PartialObjectMetadataList{}
	l.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	return l
}

// Policy is a ServiceKeyPolicy with its selector parsed once.
type Policy struct {
	Name     string
	Spec     v1.ServiceKeyPolicySpec
	selector labels.Selector
	err      error
}

// Compile parses the policy's selector. A selector that does not parse leaves the
// policy selecting nothing, and Err says why.
func Compile(p *v1.ServiceKeyPolicy) Policy {
	c := Policy{Name: p.Name, Spec: p.Spec}
	if p.Spec.NamespaceSelector == nil {
		c.err = fmt.Errorf("namespaceSelector is required")
		return c
	}
	c.selector, c.err = metav1.LabelSelectorAsSelector(p.Spec.NamespaceSelector)
	return c
}

// Err is why the policy's selector is unusable, or nil.
func (p Policy) Err() error { return p.err }

// Selects says whether the policy applies to a namespace with these labels.
func (p Policy) Selects(nsLabels map[string]string) bool {
	return p.err == nil && p.selector.Matches(labels.Set(nsLabels))
}

// Gaps lists what r asks for that this policy does not allow; none means it permits r.
// Named checks, one per privilege, run in the order messages list them.
func (p Policy) Gaps(r Request) []Gap {
	var out []Gap
	for _, check := range checks {
		out = append(out, check(p.Spec, r)...)
	}
	return out
}

type check func(s v1.ServiceKeyPolicySpec, r Request) []Gap

var checks = []check{scopeGaps, audienceGaps, subjectGaps, keySizeGap, validityGap, ttlGap, clientSecretGap}

func scopeGaps(s v1.ServiceKeyPolicySpec, r Request) []Gap {
	var out []Gap
	for _, sc := range r.Scopes {
		if !matchesAny(s.Allowed.Scopes, sc, ReservedScopePrefix) {
			out = append(out, Gap{KindScope, sc})
		}
	}
	return out
}

func audienceGaps(s v1.ServiceKeyPolicySpec, r Request) []Gap {
	var out []Gap
	for _, a := range r.Audiences {
		if !matchesAny(s.Allowed.Audiences, a, "") {
			out = append(out, Gap{KindAudience, a})
		}
	}
	return out
}

func subjectGaps(s v1.ServiceKeyPolicySpec, r Request) []Gap {
	if r.Subject == "" || r.Subject == v1.DefaultSubject(r.Namespace, r.Name) ||
		matchesAny(s.Allowed.Subjects, r.Subject, ReservedSubjectPrefix) {
		return nil
	}
	return []Gap{{KindSubject, r.Subject}}
}

func keySizeGap(s v1.ServiceKeyPolicySpec, r Request) []Gap {
	if s.MinKeySize == 0 || r.KeySize >= s.MinKeySize {
		return nil
	}
	return []Gap{{KindKeySize, fmt.Sprint(r.KeySize)}}
}

func validityGap(s v1.ServiceKeyPolicySpec, r Request) []Gap {
	switch {
	case s.MaxValidity == nil:
		return nil
	case r.Lifetime == nil:
		return []Gap{{KindValidity, ""}}
	case *r.Lifetime > s.MaxValidity.Duration:
		return []Gap{{KindValidity, r.Lifetime.String()}}
	}
	return nil
}

func ttlGap(s v1.ServiceKeyPolicySpec, r Request) []Gap {
	if s.MaxAccessTokenTTL == nil || r.AccessTokenTTL <= s.MaxAccessTokenTTL.Duration {
		return nil
	}
	return []Gap{{KindAccessTokenTTL, r.AccessTokenTTL.String()}}
}

func clientSecretGap(s v1.ServiceKeyPolicySpec, r Request) []Gap {
	if !r.ClientSecret || s.Allowed.ClientSecret {
		return nil
	}
	return []Gap{{KindClientSecret, ""}}
}

// Matches says whether value matches pattern: equal, or pattern ends in '*' and value
// starts with what precedes it. A value with the reserved prefix ("" for none)
// matches only an equal pattern.
func Matches(pattern, value, reserved string) bool {
	if pattern == value {
		return true
	}
	prefix, wild := strings.CutSuffix(pattern, "*")
	if !wild || reserved != "" && strings.HasPrefix(value, reserved) {
		return false
	}
	return strings.HasPrefix(value, prefix)
}

func matchesAny(patterns []string, value, reserved string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return Matches(p, value, reserved) })
}
