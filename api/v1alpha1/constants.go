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

// Condition types. Ready is the summary condition every tool (kubectl wait, Argo CD,
// Flux) looks at; Synced carries the problems that leave a working key working, so a
// cosmetic error (a refused label, a failed write) never turns Ready off.
const (
	// ConditionReady is True when grants signed with the Active key are accepted now.
	ConditionReady = "Ready"
	// ConditionSynced is True when the Secret and the status hold everything the spec
	// asks for; False says what is being retried (with backoff) and why.
	ConditionSynced = "Synced"
)

// Reasons of the Ready condition: CamelCase, stable, safe to alert on.
const (
	// ReasonIssued: the Active key's private half is in the Secret and grants signed
	// with it are accepted.
	ReasonIssued = "Issued"
	// ReasonPending: no key has reached the Secret yet; the first key is published and
	// its private half is on its way (condition Synced says what holds it up).
	ReasonPending = "Pending"
	// ReasonExpired: validity or expiresAt has passed; grants are refused.
	ReasonExpired = "Expired"
	// ReasonSuspended: spec.suspended is true; grants are refused until it is unset.
	ReasonSuspended = "Suspended"
	// ReasonSecretConflict: a Secret of the wanted name exists and this ServiceKey does
	// not own it; the controller leaves it untouched. On Ready only while no key was
	// ever issued; once a key works, the conflict is reported on Synced.
	ReasonSecretConflict = "SecretConflict"
	// ReasonPolicyDenied: no ServiceKeyPolicy selecting the namespace permits all of the
	// spec; no key is issued, and an issued key is refused at the token endpoint.
	ReasonPolicyDenied = "PolicyDenied"
)

// Reasons of the Synced condition. SecretConflict is also one of them.
const (
	// ReasonSynced: the Secret and the status match the spec.
	ReasonSynced = "Synced"
	// ReasonInvalidSpec: the API server refused the Secret as invalid (say, a label a
	// webhook refuses); the keys stay as they were and the write is retried.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonReconcileError: writing the Secret failed for another reason (refused by
	// an admission policy, API server unavailable); retried with backoff.
	ReasonReconcileError = "ReconcileError"
)

// Event reasons: what a cluster admin wants to see in `kubectl describe`.
const (
	// EventKeyIssued: the first key pair of a ServiceKey was generated.
	EventKeyIssued = "KeyIssued"
	// EventKeyRotated: a new key pair replaced the Active one.
	EventKeyRotated = "KeyRotated"
	// EventKeyRetired: a Retiring key passed its grace period and left the status.
	EventKeyRetired = "KeyRetired"
	// EventSecretRestored: the Secret was missing or edited and has been written again.
	EventSecretRestored = "SecretRestored"
	// EventSecretConflict: a Secret of the wanted name belongs to someone else.
	EventSecretConflict = "SecretConflict"
	// EventPolicyDenied: the ServiceKey became refused by policy.
	EventPolicyDenied = "PolicyDenied"
	// EventPolicyAllowed: a ServiceKey refused by policy is permitted again.
	EventPolicyAllowed = "PolicyAllowed"
	// EventSecretWriteFailed: the API server refused the Secret; see condition Synced.
	EventSecretWriteFailed = "SecretWriteFailed"
	// EventStatusWriteFailed: the API server refused the status, so nothing new was
	// handed out; retried with backoff. (The condition cannot say so: it is in status.)
	EventStatusWriteFailed = "StatusWriteFailed"
)

// Reasons of a ServiceKeyPolicy's Ready condition, and Events on policies.
const (
	// ReasonPolicyActive: the selector is valid and selects at least one namespace.
	ReasonPolicyActive = "Active"
	// ReasonSelectsNothing: the selector is valid but selects no namespace now.
	ReasonSelectsNothing = "SelectsNothing"
	// ReasonInvalidSelector: the selector cannot be used; the policy permits nothing.
	ReasonInvalidSelector = "InvalidSelector"
)

// Well-known names on objects the operator manages.
const (
	// AnnotationRotate: changing its value on a ServiceKey asks for a rotation.
	AnnotationRotate = "auth.servicekey.dev/rotate"
	// LabelServiceKey: on every key Secret, the name of its ServiceKey; the controller's
	// Secret cache selects on it so it never caches unrelated Secrets.
	LabelServiceKey = "auth.servicekey.dev/service-key"
	// SecretType is the type of key Secrets.
	SecretType = "auth.servicekey.dev/service-key" //nolint:gosec // a Secret type name, not a credential
	// SubjectPrefix starts every default subject: system:servicekey:<namespace>:<name>.
	SubjectPrefix = "system:servicekey:"
)

// Data keys of a key Secret, listed for users in docs/controller.md ("What it writes").
const (
	// SecretKeyJSON is the key file in ftw.tokenauth's layout.
	SecretKeyJSON = "key.json"
	// SecretKeyPrivateKey is the PEM private key.
	SecretKeyPrivateKey = "private-key.pem"
	// SecretKeyClientID is the client_id (`<namespace>/<name>`).
	SecretKeyClientID = "client-id"
	// SecretKeyKeyID is the Active key's ID.
	SecretKeyKeyID = "key-id"
	// SecretKeyTokenURI is the token endpoint URL.
	SecretKeyTokenURI = "token-uri"
	// SecretKeySubject is the subject.
	SecretKeySubject = "subject"
	// SecretKeyClientSecret is the client secret, when spec.clientSecret.enabled.
	SecretKeyClientSecret = "client-secret"
)

// DefaultSubject is the subject a ServiceKey gets when spec.subject is empty: the
// namespace's own identity space, so no key can speak for another namespace by default.
func DefaultSubject(namespace, name string) string {
	return SubjectPrefix + namespace + ":" + name
}

// ClientID is the client_id of a ServiceKey, the `iss` its grants carry.
func ClientID(namespace, name string) string {
	return namespace + "/" + name
}
