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
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
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

	// staged holds key pairs published as Pending whose private half is not in the
	// Secret yet; memory only.
	staged stash
}

// RBAC of the controller: ServiceKeys read, status written; Secrets read and written
// (RBAC cannot narrow this to key Secrets, which is why the controller never writes a
// Secret it does not control, see secretConflict); finalizers for
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

// Reconcile brings one ServiceKey's Secret and status to the desired state, in an
// order that never hands out an unpublished key: anything new (a key pair, a client
// secret) is first published in status, then written to the Secret, then promoted
// (docs/controller.md, "Write order"). It works from the cache, and starts over from
// live reads when it is about to generate, retire or rewrite anything the cache cannot
// vouch for.
func (r *ServiceKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return r.reconcile(ctx, req.NamespacedName, false)
}

// reconcile is Reconcile from the cache, or from live reads when live is set.
func (r *ServiceKeyReconciler) reconcile(ctx context.Context, name types.NamespacedName, live bool) (ctrl.Result, error) {
	var rd client.Reader = r.Client
	if live {
		rd = r.APIReader
	}
	o, err := r.observe(ctx, rd, name)
	switch {
	case err != nil:
		return ctrl.Result{}, err
	case o.Key == nil || o.Key.DeletionTimestamp != nil:
		// Gone, or being deleted (foreground, or held by a finalizer): the garbage
		// collector removes the Secret; re-keying now would hand out a key for a
		// ServiceKey on its way out.
		r.staged.forget(name)
		return ctrl.Result{}, nil
	case o.NamespaceLabels == nil:
		// The namespace is not in the cache yet; its arrival enqueues this key again.
		return ctrl.Result{RequeueAfter: namespaceRetry}, nil
	}
	d := Decide(o)
	if d.BlockedReason != "" {
		// Nothing is written while blocked (refused by policy, expired): no private key
		// waits in memory for it. A Pending key left without it is retired with grace
		// once the ServiceKey is unblocked.
		r.staged.forget(name)
	}
	if !live && d.BlockedReason == "" && (d.Generate() || d.RetirePending || o.Secret == nil) {
		// Read live before generating or retiring anything: the cache holds only
		// labelled Secrets (a foreign one of that name must be found, never
		// overwritten), and it may lag behind this controller's own last write.
		return r.reconcile(ctx, name, true)
	}
	if d.Generate() {
		if o, err = r.publish(ctx, o, d); apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		} else if err != nil {
			return ctrl.Result{}, err
		}
		d = Decide(o)
	}
	desired, err := Build(o, d, r.Config)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("build desired state of %s: %w", name, err)
	}
	if !live && desired.Secret != nil && desired.Secret.Data == nil && !desired.Secret.matches(o.Secret, o.Key.UID) {
		// The Secret is to be rewritten with the private key it holds, which the
		// cache keeps only as a digest.
		return r.reconcile(ctx, name, true)
	}
	if err := r.write(ctx, o, d, &desired); apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	} else if err != nil {
		return ctrl.Result{}, err
	}
	if pendingKey(desired.Status.Keys) == nil && meta.IsStatusConditionTrue(desired.Status.Conditions, v1.ConditionSynced) {
		r.staged.forget(name)
	}
	r.emit(o.Key, desired)
	return ctrl.Result{RequeueAfter: desired.RequeueAfter}, nil
}

// publish generates what the decision asks for (or reuses what is staged from an
// attempt whose status write failed), stages it in memory and publishes it in status.
// It returns the observation updated with the stored ServiceKey and the staged key.
func (r *ServiceKeyReconciler) publish(ctx context.Context, o Observed, d Decision) (Observed, error) {
	st, err := r.generate(o, d)
	if err != nil {
		return o, err
	}
	name := types.NamespacedName{Namespace: o.Key.Namespace, Name: o.Key.Name}
	r.staged.put(name, st)
	status, events, err := Publish(o, d, &st.Key)
	if err != nil {
		return o, fmt.Errorf("publish new key of %s: %w", name, err)
	}
	key, err := r.applyStatus(ctx, o.Key, status)
	if err != nil {
		if !apierrors.IsConflict(err) {
			r.event(o.Key, Event{corev1.EventTypeWarning, v1.EventStatusWriteFailed, "Publish",
				"the API server refused the status, so no new key was handed out; retrying: " + statusMessage(err)})
		}
		return o, err
	}
	for _, e := range events {
		r.event(key, e)
	}
	o.Key, o.Staged = key, st
	return o, nil
}

// generate makes what the decision asks for: a key pair, a client secret, or both,
// reusing what is already staged for this ServiceKey and not yet published (a failed
// status write must not cost a new key per retry).
func (r *ServiceKeyReconciler) generate(o Observed, d Decision) (*Staged, error) {
	st := &Staged{UID: o.Key.UID}
	if o.Staged != nil {
		*st = *o.Staged
	}
	if d.Rekey != "" {
		st.Cause = d.Rekey
		size, enc := keySize(o.Key.Spec.PrivateKey), keyEncoding(o.Key.Spec.PrivateKey)
		if !stagedFits(st, size, enc) {
			k, err := r.Keys.New(size, enc)
			if err != nil {
				return nil, err
			}
			st.Key.Key, st.Key.PEM = k.Key, k.PEM
		}
	}
	if d.NewClientSecret && st.Key.ClientSecret == "" {
		secret, err := RandomSecret()
		if err != nil {
			return nil, err
		}
		st.Key.ClientSecret = secret
	}
	return st, nil
}

// stagedFits reports whether a staged key pair can serve a new rotation: it has the
// size and encoding the spec asks for now.
func stagedFits(st *Staged, size int32, enc v1.PrivateKeyEncoding) bool {
	if st.Key.Key == nil || int32(st.Key.Key.N.BitLen()) != size { //nolint:gosec // bit lengths fit
		return false
	}
	_, got, err := keyutil.ParsePrivateKey(st.Key.PEM)
	return err == nil && got == enc
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
	o.Staged = r.staged.get(name, key.UID)
	if id := stagedKeyID(o.Staged); id != "" {
		if k := keyWithID(key.Status.Keys, id); k != nil && k.State != v1.KeyPending {
			// Promoted already (the reply to that status write was lost): never reuse it.
			r.staged.forget(name)
			o.Staged = nil
		}
	}
	return o, nil
}

// write applies the Secret, then the status. Both carry the resourceVersion that was
// read, so a reconcile working from a stale cache fails with a conflict instead of
// undoing a newer write. A Secret the API server refuses leaves the keys as they were
// (a Pending key stays Pending and staged) and is reported on condition Synced; Ready
// keeps saying whether the Active key works.
func (r *ServiceKeyReconciler) write(ctx context.Context, o Observed, d Decision, desired *Desired) error {
	if desired.Secret != nil && !desired.Secret.matches(o.Secret, o.Key.UID) {
		if desired.Secret.Data == nil {
			return fmt.Errorf("rewriting Secret %s needs the private key it holds, which was not read live", desired.Secret.Name)
		}
		ac := desired.Secret.applyConfiguration(o.Key)
		if o.Secret != nil {
			ac.WithResourceVersion(o.Secret.ResourceVersion)
		}
		err := r.Client.Apply(ctx, ac, client.FieldOwner(FieldOwner), client.ForceOwnership)
		switch {
		case apierrors.IsConflict(err):
			return err
		case err != nil:
			reason := v1.ReasonReconcileError
			if apierrors.IsInvalid(err) {
				reason = v1.ReasonInvalidSpec
			}
			msg := "the API server refused Secret " + desired.Secret.Name + ": " + redact(statusMessage(err), desired.Secret.Data)
			refused, berr := SecretRefused(o, d, r.Config, reason, msg)
			if berr != nil {
				return berr
			}
			*desired = refused
		}
	}
	if statusUnchanged(o.Key.Status, desired.Status) {
		return nil
	}
	_, err := r.applyStatus(ctx, o.Key, desired.Status)
	return err
}

// statusUnchanged compares the fields the controller owns; lastUsedTime belongs to
// the token server.
func statusUnchanged(observed, desired v1.ServiceKeyStatus) bool {
	observed.LastUsedTime, desired.LastUsedTime = nil, nil
	return equality.Semantic.DeepEqual(observed, desired)
}

// applyStatus applies st as the status of key, on the condition that key is still at
// the resourceVersion that was read, and returns the ServiceKey as stored.
func (r *ServiceKeyReconciler) applyStatus(ctx context.Context, key *v1.ServiceKey, st v1.ServiceKeyStatus) (*v1.ServiceKey, error) {
	status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return nil, fmt.Errorf("convert status: %w", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": status}}
	u.SetGroupVersionKind(v1.GroupVersion.WithKind("ServiceKey"))
	u.SetNamespace(key.Namespace)
	u.SetName(key.Name)
	u.SetResourceVersion(key.ResourceVersion)
	err = r.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(FieldOwner), client.ForceOwnership)
	if err != nil {
		return nil, fmt.Errorf("apply status of ServiceKey %s/%s: %w", key.Namespace, key.Name, err)
	}
	stored := &v1.ServiceKey{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, stored); err != nil {
		return nil, fmt.Errorf("read back ServiceKey %s/%s: %w", key.Namespace, key.Name, err)
	}
	return stored, nil
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
	for _, e := range desired.Events {
		r.event(key, e)
	}
}

func (r *ServiceKeyReconciler) event(key *v1.ServiceKey, e Event) {
	if r.Recorder != nil {
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
