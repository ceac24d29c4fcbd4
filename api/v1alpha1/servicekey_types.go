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

// ServiceKeySpec is what a cluster admin asks for: who the key speaks for, what it may
// request, and how its key pair is made, rotated and retired.
//
// Rules the API server can check on its own are written as OpenAPI and CEL validations
// here, so a bad manifest is refused at apply time instead of surfacing later as a
// False Ready condition.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.validity) && has(self.expiresAt))",message="set either validity or expiresAt, not both",fieldPath=".expiresAt"
// +kubebuilder:validation:XValidation:rule="has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)",message="secretName is immutable: it cannot be added, changed or removed after creation",fieldPath=".secretName"
type ServiceKeySpec struct {
	// Subject is the `sub` of access tokens issued with this key. Defaults to
	// `system:servicekey:<namespace>:<name>`. Any other subject speaks for an identity
	// outside the namespace's own and is refused unless the controller's policy allows it.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="!self.matches('\\\\s')",message="subject must not contain white space"
	Subject string `json:"subject,omitempty"`

	// Scopes are the scopes this key may request. A grant's scope must be a subset of
	// them; an empty list means the key can only get tokens without scope. Each entry is
	// an RFC 6749 §3.3 scope-token: printable ASCII without spaces, quotes or backslashes.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.all(s, s.matches('^[\\\\x21\\\\x23-\\\\x5b\\\\x5d-\\\\x7e]+$'))",message="each scope must be a non-empty RFC 6749 scope-token: printable ASCII without spaces, quotes or backslashes"
	Scopes []string `json:"scopes,omitempty"`

	// Audiences become the `aud` of access tokens issued with this key. Empty means the
	// token server's default audience.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.all(a, !a.matches('\\\\s'))",message="audiences must not contain white space"
	Audiences []string `json:"audiences,omitempty"`

	// SecretName names the Secret that receives the private key, in the ServiceKey's
	// namespace. Defaults to the ServiceKey's name. Immutable: pods mount the Secret by
	// name, so moving it would break them silently.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="secretName must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
	SecretName string `json:"secretName,omitempty"`

	// SecretTemplate holds labels and annotations copied onto the Secret. Changing them
	// updates the Secret in place; it never re-keys.
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`

	// PrivateKey says how the RSA key pair is generated and encoded. Changing it re-keys.
	// +optional
	// +kubebuilder:default={}
	PrivateKey PrivateKeySpec `json:"privateKey,omitempty"`

	// Rotation configures automatic rotation and how long a replaced public key keeps
	// working. Manual rotation: set the annotation `auth.servicekey.dev/rotate` to any
	// new value.
	// +optional
	// +kubebuilder:default={}
	Rotation RotationSpec `json:"rotation,omitempty"`

	// Validity is how long after its creation the ServiceKey stops working. Mutually
	// exclusive with expiresAt; neither means no expiry.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m') && duration(self) <= duration('87600h')",message="validity must be a duration such as 720h, between 1m and 87600h (10 years)"
	Validity *metav1.Duration `json:"validity,omitempty"`

	// ExpiresAt is the moment the ServiceKey stops working (RFC 3339). Mutually
	// exclusive with validity; neither means no expiry.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// AllowedCIDRs restricts the source addresses from which the token endpoint accepts
	// grants signed with this key. Empty means any address.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c))",message="each allowedCIDRs entry must be a CIDR such as 10.0.0.0/8 or fd00::/8"
	AllowedCIDRs []string `json:"allowedCIDRs,omitempty"`

	// AccessTokenTTL is the lifetime of access tokens issued with this key, capped by the
	// token server's maximum.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m') && duration(self) <= duration('24h')",message="accessTokenTTL must be a duration such as 1h, between 1m and 24h"
	AccessTokenTTL *metav1.Duration `json:"accessTokenTTL,omitempty"`

	// Suspended refuses every grant signed with this key without deleting anything;
	// unset it to resume.
	// +optional
	Suspended bool `json:"suspended,omitempty"`

	// ClientSecret opts in to client_credentials with a client secret (HTTP Basic or
	// form), for clients that cannot sign JWTs. Off by default: a signed grant never
	// travels as a reusable secret.
	// +optional
	ClientSecret *ClientSecretSpec `json:"clientSecret,omitempty"`

	// RefreshTokens opts in to refresh tokens (RFC 6749 §6): token responses then carry
	// a refresh_token that grant_type=refresh_token exchanges for a new access token
	// and a new refresh token, without signing a new grant. Off by default, as RFC 6749
	// §4.4.3 advises for client credentials. A refresh token dies with the key that
	// got it: retired, suspended, deleted, expired, or no longer allowed by policy.
	// +optional
	RefreshTokens *RefreshTokensSpec `json:"refreshTokens,omitempty"`
}

// RefreshTokensSpec configures refresh tokens.
type RefreshTokensSpec struct {
	// TTL is how long a refresh-token family lives from the grant that started it;
	// each refresh returns a new refresh token that ends at the same time. After it,
	// the client signs a new grant.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('5m') && duration(self) <= duration('8760h')",message="refreshTokens.ttl must be a duration such as 720h, between 5m and 8760h (1 year)"
	TTL metav1.Duration `json:"ttl"`
}

// ClientSecretSpec configures the optional client secret.
type ClientSecretSpec struct {
	// Enabled makes the controller generate a random secret into the Secret's
	// `client-secret` file; the status holds only its SHA-256 hash.
	Enabled bool `json:"enabled"`
}

// SecretTemplate is metadata copied onto the key's Secret, for tools that select or
// annotate Secrets (backup, replication, policy engines).
type SecretTemplate struct {
	// Labels are added to the Secret. Keys under `auth.servicekey.dev/` are reserved.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('auth.servicekey.dev/'))",message="labels under auth.servicekey.dev/ are reserved for the operator"
	Labels map[string]LabelValue `json:"labels,omitempty"`

	// Annotations are added to the Secret. Keys under `auth.servicekey.dev/` are reserved.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('auth.servicekey.dev/'))",message="annotations under auth.servicekey.dev/ are reserved for the operator"
	Annotations map[string]string `json:"annotations,omitempty"`
}

// LabelValue is the value of a label on the Secret, checked by the API server at apply
// time as it would check it on the Secret itself, so a bad value is refused with the
// ServiceKey instead of surfacing later as a Secret the API server will not store.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:XValidation:rule="self.matches('^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$')",message="a label value must be empty or up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
type LabelValue string

// PrivateKeyEncoding is the PEM encoding of the private key in the Secret.
// +kubebuilder:validation:Enum=PKCS1;PKCS8
type PrivateKeyEncoding string

const (
	// PKCS1 writes an "RSA PRIVATE KEY" PEM block (RFC 8017), what most RSA tooling and
	// ftw.tokenauth key files expect.
	PKCS1 PrivateKeyEncoding = "PKCS1"
	// PKCS8 writes a "PRIVATE KEY" PEM block (RFC 5208), what Java and some JOSE
	// libraries require.
	PKCS8 PrivateKeyEncoding = "PKCS8"
)

// PrivateKeySpec says how the key pair is generated. RSA only: the grant is signed
// with RS256, the algorithm every OAuth 2.0 JWT-bearer client supports.
type PrivateKeySpec struct {
	// Size is the RSA modulus length in bits.
	// +optional
	// +kubebuilder:default=2048
	// +kubebuilder:validation:Enum=2048;3072;4096
	Size int32 `json:"size,omitempty"`

	// Encoding is the PEM encoding of the private key: PKCS1 or PKCS8.
	// +optional
	// +kubebuilder:default=PKCS1
	Encoding PrivateKeyEncoding `json:"encoding,omitempty"`
}

// RotationSpec configures key rotation. A rotated-out public key stays valid for
// gracePeriod so workloads that have not yet reloaded the Secret keep working.
//
// +kubebuilder:validation:XValidation:rule="!has(self.every) || !has(self.gracePeriod) || !self.every.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || !self.gracePeriod.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self.gracePeriod) < duration(self.every)",message="gracePeriod (default 24h) must be shorter than every",fieldPath=".gracePeriod"
type RotationSpec struct {
	// Every rotates the key automatically at this interval after the last rotation.
	// Unset means rotation only on request.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1h') && duration(self) <= duration('87600h')",message="every must be a duration such as 720h, between 1h and 87600h (10 years)"
	Every *metav1.Duration `json:"every,omitempty"`

	// GracePeriod is how long the previous public key keeps working after a rotation.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('8760h')",message="gracePeriod must be a duration such as 24h, between 1s and 8760h (1 year)"
	GracePeriod *metav1.Duration `json:"gracePeriod,omitempty"`
}

// KeyState is the lifecycle state of one public key in the status.
// +kubebuilder:validation:Enum=Pending;Active;Retiring
type KeyState string

const (
	// KeyPending is a new key published before its private half is written to the
	// Secret, so that no key ever reaches a pod unpublished. It is accepted like the
	// Active key; once the Secret holds it, it becomes Active. A Pending key whose
	// private half is nowhere to be found (the controller was stopped in between)
	// turns Retiring for the grace period, like any replaced key.
	KeyPending KeyState = "Pending"
	// KeyActive is the key whose private half is in the Secret; new grants use it.
	KeyActive KeyState = "Active"
	// KeyRetiring is a rotated-out key, still accepted until its notAfter so that
	// workloads reloading the Secret are not cut off.
	KeyRetiring KeyState = "Retiring"
)

// PublicKey is one published public key of a ServiceKey.
type PublicKey struct {
	// KeyID is the RFC 7638 JWK thumbprint (base64url SHA-256) of the public key; grants
	// name it in their `kid` header.
	// +kubebuilder:validation:MaxLength=64
	KeyID string `json:"keyID"`

	// PublicKey is the PEM-encoded SubjectPublicKeyInfo of the key.
	// +kubebuilder:validation:MaxLength=4096
	PublicKey string `json:"publicKey"`

	// Created is when the key pair was generated.
	Created metav1.Time `json:"created"`

	// NotAfter is when the key stops being accepted: the end of the grace period for a
	// Retiring key, the ServiceKey's expiry for the Active one. Unset means no end.
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`

	// Superseded is when a Retiring key stopped being the Active one. Its notAfter is
	// superseded + gracePeriod, and lowering spec.rotation.gracePeriod shortens it.
	// +optional
	Superseded *metav1.Time `json:"superseded,omitempty"`

	// State is Pending, Active or Retiring.
	State KeyState `json:"state"`
}

// ServiceKeyStatus is what the controller observed and published. It never holds
// private key material.
type ServiceKeyStatus struct {
	// Conditions summarise the ServiceKey; `Ready` is True when grants signed with the
	// Active key are accepted.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ClientID is the `iss` a grant must carry: `<namespace>/<name>`.
	// +optional
	ClientID string `json:"clientID,omitempty"`

	// Subject is the effective `sub` of issued access tokens.
	// +optional
	Subject string `json:"subject,omitempty"`

	// SecretName is the Secret holding the private key.
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// Keys are the published public keys: the Active key, at most one Pending key
	// (during issuance) and any Retiring ones.
	// +optional
	// +listType=map
	// +listMapKey=keyID
	// +kubebuilder:validation:MaxItems=17
	Keys []PublicKey `json:"keys,omitempty"`

	// LastRotationTime is when the Active key became Active.
	// +optional
	LastRotationTime *metav1.Time `json:"lastRotationTime,omitempty"`

	// NextRotationTime is when the next automatic rotation is due, if rotation.every is set.
	// +optional
	NextRotationTime *metav1.Time `json:"nextRotationTime,omitempty"`

	// ClientSecretHash is `sha256:` and the base64url SHA-256 of the client secret, when
	// spec.clientSecret.enabled; the secret itself is only in the Secret.
	// +optional
	ClientSecretHash string `json:"clientSecretHash,omitempty"`

	// LastUsedTime is when the token server last issued a token with this key, coarse
	// (written at most once per the server's granularity).
	// +optional
	LastUsedTime *metav1.Time `json:"lastUsedTime,omitempty"`
}

// ServiceKey is an RSA key pair for a workload: the private key lives in a Secret the
// workload mounts, the public key in the status, and the token server exchanges grants
// signed with it for short-lived access tokens.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sk,categories=servicekey-operator
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="the name of a ServiceKey must be at most 63 characters: it becomes the value of the auth.servicekey.dev/service-key label on its Secret"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Subject",type=string,JSONPath=`.status.subject`
// +kubebuilder:printcolumn:name="Key ID",type=string,JSONPath=`.status.keys[?(@.state=="Active")].keyID`
// +kubebuilder:printcolumn:name="Expires",type=string,description="When the Active key stops working (RFC 3339); empty means never",JSONPath=`.status.keys[?(@.state=="Active")].notAfter`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ServiceKey struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired key.
	// +required
	Spec ServiceKeySpec `json:"spec"`

	// Status is what the controller published.
	// +optional
	Status ServiceKeyStatus `json:"status,omitempty"`
}

// ServiceKeyList is a list of ServiceKeys.
//
// +kubebuilder:object:root=true
type ServiceKeyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ServiceKey `json:"items"`
}
