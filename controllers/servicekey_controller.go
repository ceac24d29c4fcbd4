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

// Package controllers holds the ServiceKey reconciler: it turns each ServiceKey into
// one Secret with the private key and a status that publishes the public keys.
// Decisions are pure functions (plan.go, desired.go); this file only reads, writes and
// emits.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// FieldOwner is the server-side apply field manager of everything the controller writes.
const FieldOwner = "servicekey-operator"

// conflictRetry is how soon a reconcile that lost an optimistic-concurrency race runs
// again; the cache has usually caught up by then.
const conflictRetry = 200 * time.Millisecond

// namespaceRetry is how soon a ServiceKey whose namespace is not in the cache yet is
// looked at again, should the namespace's own event not come.
const namespaceRetry = time.Second

// ServiceKeyReconciler issues, rotates, repairs and retires the key pairs of ServiceKeys.
type ServiceKeyReconciler struct {
	// Client reads from the manager's cache (Secrets: only those labelled as key
	// Secrets) and writes to the API server.
	Client client.Client
	// APIReader reads straight from the API server: for Secrets the label-selected
	// cache cannot see, and to confirm a re-key against fresh objects.
	APIReader client.Reader
	// Recorder emits Events on ServiceKeys.
	Recorder events.EventRecorder
	// Clock is injected so tests can move time for rotation, grace and expiry.
	Clock clock.PassiveClock
	// Keys generates key pairs; injected so tests control randomness and cost.
	Keys KeyGenerator
	// Config is the controller-wide configuration.
	Config Config
	// Metrics counts rotations and policy refusals; may be nil.
	Metrics *Metrics
}

// RBAC of the controller: ServiceKeys read, status written; Secrets read and written
// (RBAC cannot narrow this to key Secrets, which is why the controller never writes a
// Secret it does not control, see secretOwnedByOthers); finalizers for
// blockOwnerDeletion on the Secrets' owner references; events.
// +kubebuilder:rbac:groups=auth.servicekey.dev,resources=servicekeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.servicekey.dev,resources=servicekeys/status,verbs=get;patch
// +kubebuilder:rbac:groups=auth.servicekey.dev,resources=servicekeys/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=auth.servicekey.dev,resources=servicekeypolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
//
// Leader election (--leader-elect), in the install namespace only:
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=servicekey-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=servicekey-system,resources=events,verbs=create;patch

// Reconcile brings one ServiceKey's Secret and status to the desired state.
func (r *ServiceKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	o, err := r.observe(ctx, r.Client, req.NamespacedName)
	if o.Key == nil || err != nil {
		return ctrl.Result{}, err
	}
	if o.NamespaceLabels == nil {
		// The namespace is not in the cache yet; its arrival enqueues this key again.
		return ctrl.Result{RequeueAfter: namespaceRetry}, nil
	}
	d := Decide(o)
	var nk *NewKey
	// A blocked ServiceKey (refused by policy, expired) writes no Secret: no live read.
	live := d.BlockedReason == "" && (d.Rekey != "" || d.NewClientSecret || o.Secret == nil)
	if live {
		// Read live before acting on a missing Secret or a re-key: the cache holds only
		// labelled Secrets (a foreign one of that name must be found, never
		// overwritten), and it may lag behind this controller's own last write (a key
		// pair must never be generated, and a rotation never done, on stale objects).
		if o, err = r.observe(ctx, r.APIReader, req.NamespacedName); o.Key == nil || err != nil {
			return ctrl.Result{}, err
		}
		d = Decide(o)
		if nk, err = r.generate(o, d); err != nil {
			return ctrl.Result{}, err
		}
	}
	desired, err := Build(o, d, r.Config, nk)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("build desired state of %s: %w", req.NamespacedName, err)
	}
	if err := r.write(ctx, o, &desired, live); apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	} else if err != nil {
		return ctrl.Result{}, err
	}
	r.emit(o.Key, desired)
	return ctrl.Result{RequeueAfter: desired.RequeueAfter}, nil
}

// generate makes what the decision asks for: a key pair, a client secret, or both.
func (r *ServiceKeyReconciler) generate(o Observed, d Decision) (*NewKey, error) {
	if d.Rekey == "" && !d.NewClientSecret {
		return nil, nil
	}
	nk := &NewKey{}
	if d.Rekey != "" {
		k, err := r.Keys.New(keySize(o.Key.Spec.PrivateKey), keyEncoding(o.Key.Spec.PrivateKey))
		if err != nil {
			return nil, err
		}
		nk = k
	}
	if d.NewClientSecret {
		s, err := RandomSecret()
		if err != nil {
			return nil, err
		}
		nk.ClientSecret = s
	}
	return nk, nil
}

// observe reads the ServiceKey and its Secret (nil when absent) through rd, and the
// namespace's labels and the policies from the cache.
func (r *ServiceKeyReconciler) observe(ctx context.Context, rd client.Reader, name types.NamespacedName) (Observed, error) {
	o := Observed{Now: r.Clock.Now()}
	key := &v1.ServiceKey{}
	if err := rd.Get(ctx, name, key); err != nil {
		return o, client.IgnoreNotFound(err)
	}
	var err error
	if o.NamespaceLabels, o.Policies, err = readPolicies(ctx, r.Client, key.Namespace); err != nil {
		return o, err
	}
	secretKey := types.NamespacedName{Namespace: key.Namespace, Name: secretName(key)}
	secret := &corev1.Secret{}
	err = rd.Get(ctx, secretKey, secret)
	switch {
	case apierrors.IsNotFound(err):
		secret = nil
	case err != nil:
		return o, fmt.Errorf("get Secret %s: %w", secretKey, err)
	}
	o.Key, o.Secret = key, secret
	return o, nil
}

// write applies the Secret, then the status. When o came from the cache, both carry
// the resourceVersion that was read, so a reconcile working from a stale cache fails
// with a conflict instead of undoing a newer write. When o was read live (re-key,
// new client secret, missing Secret), the status is applied without that
// precondition: the Secret may already hold a new key, and a concurrent write of a
// field the controller does not own (the token server's lastUsedTime) must not leave
// that key unpublished. A Secret the API server refuses (say, a template label that
// is not a valid label) leaves the keys as they were and reports InvalidSpec.
func (r *ServiceKeyReconciler) write(ctx context.Context, o Observed, desired *Desired, live bool) error {
	if desired.Secret != nil && !desired.Secret.matches(o.Secret, o.Key.UID) {
		ac := desired.Secret.applyConfiguration(o.Key)
		if o.Secret != nil {
			ac.WithResourceVersion(o.Secret.ResourceVersion)
		}
		err := r.Client.Apply(ctx, ac, client.FieldOwner(FieldOwner), client.ForceOwnership)
		if apierrors.IsInvalid(err) {
			// Nothing was written: no new key, no retirement, nothing to announce.
			desired.Status, desired.Events, desired.Rotated = invalidSpecStatus(o.Key, err), nil, ""
		} else if err != nil {
			return fmt.Errorf("apply Secret %s/%s: %w", o.Key.Namespace, desired.Secret.Name, err)
		}
	}
	if statusUnchanged(o.Key.Status, desired.Status) {
		return nil
	}
	return r.applyStatus(ctx, o.Key, desired.Status, !live)
}

// statusUnchanged compares the fields the controller owns; lastUsedTime belongs to
// the token server.
func statusUnchanged(observed, desired v1.ServiceKeyStatus) bool {
	observed.LastUsedTime, desired.LastUsedTime = nil, nil
	return equality.Semantic.DeepEqual(observed, desired)
}

func (r *ServiceKeyReconciler) applyStatus(ctx context.Context, key *v1.ServiceKey, st v1.ServiceKeyStatus, precondition bool) error {
	status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return fmt.Errorf("convert status: %w", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": status}}
	u.SetGroupVersionKind(v1.GroupVersion.WithKind("ServiceKey"))
	u.SetNamespace(key.Namespace)
	u.SetName(key.Name)
	if precondition {
		u.SetResourceVersion(key.ResourceVersion)
	}
	err = r.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(FieldOwner), client.ForceOwnership)
	if err != nil {
		return fmt.Errorf("apply status of ServiceKey %s/%s: %w", key.Namespace, key.Name, err)
	}
	return nil
}

// invalidSpecStatus keeps the published keys and says why the Secret was refused.
// The API server's message names the offending field; it never contains key material
// because the only caller-controlled parts of the Secret are labels and annotations.
func invalidSpecStatus(key *v1.ServiceKey, err error) v1.ServiceKeyStatus {
	st := *key.Status.DeepCopy()
	st.ObservedGeneration = key.Generation
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: v1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1.ReasonInvalidSpec,
		ObservedGeneration: key.Generation,
		Message:            "the API server refused the Secret: " + statusMessage(err),
	})
	return st
}

func statusMessage(err error) string {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s.Status().Message
	}
	return err.Error()
}

// emit counts a published rotation and a policy refusal, and records the events of
// what was written.
func (r *ServiceKeyReconciler) emit(key *v1.ServiceKey, desired Desired) {
	if r.Metrics != nil && desired.Rotated != "" {
		r.Metrics.Rotations.WithLabelValues(string(desired.Rotated)).Inc()
	}
	if r.Metrics != nil {
		for _, k := range desired.Denied {
			r.Metrics.PolicyDenied.WithLabelValues(string(k)).Inc()
		}
	}
	if r.Recorder == nil {
		return
	}
	for _, e := range desired.Events {
		r.Recorder.Eventf(key, nil, e.Type, e.Reason, e.Action, "%s", e.Note)
	}
}

// SetupWithManager registers the controller: it watches ServiceKeys (spec and
// annotation changes; its own status writes do not wake it), the Secrets they own
// (updates and deletions, to repair them within seconds; creations of owned Secrets
// are the controller's own writes and need no second look), ServiceKeyPolicies (a
// change re-evaluates the keys in every namespace the policy selects or selected) and
// namespace labels (relabelling re-evaluates the namespace's keys).
func (r *ServiceKeyReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	err := ctrl.NewControllerManagedBy(mgr).
		For(&v1.ServiceKey{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.Secret{}, builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false },
		})).
		Watches(&v1.ServiceKeyPolicy{}, policyHandler(r.Client),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesMetadata(&corev1.Namespace{}, namespaceHandler(r.Client)).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("servicekey").
		Complete(r)
	if err != nil {
		return fmt.Errorf("set up ServiceKey controller: %w", err)
	}
	return nil
}

// CacheOptions make the manager's cache hold only key Secrets (those carrying the
// auth.servicekey.dev/service-key label), never every Secret in the cluster; other
// Secrets are read live, and only by name, when a key's Secret is not in the cache.
func CacheOptions() cache.Options {
	selector := labels.NewSelector()
	if req, err := labels.NewRequirement(v1.LabelServiceKey, selection.Exists, nil); err == nil {
		selector = selector.Add(*req)
	}
	return cache.Options{ByObject: map[client.Object]cache.ByObject{&corev1.Secret{}: {Label: selector}}}
}
