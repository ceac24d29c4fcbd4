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

package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SigningKeyType is the type of the token server's signing-key Secret.
const SigningKeyType = "auth.servicekey.dev/signing-key"

// signingRecheck is the default SigningKeyManager.Recheck: how long a deleted or
// edited signing-key Secret goes unnoticed should its watch event be missed.
const signingRecheck = time.Minute

// signingRetry is how soon a failed reconcile of the signing-key Secret runs again.
const signingRetry = 10 * time.Second

// SigningKeyManager keeps the token server's signing-key Secret: it creates the keys,
// rotates them on schedule and drops previous keys once their tokens expired. It is a
// single object (a leader-elected runnable) read live, so the controller's Secret
// cache stays limited to key Secrets. A watch on that one Secret (SetupWithManager)
// wakes it at once when the Secret is deleted or edited, which is the runbook for a
// compromised signing key; a periodic recheck backs the watch up.
//
// RBAC: get, list and watch on that Secret, create and patch to write it; the
// controller's Secret rules (servicekey_controller.go) already grant these.
type SigningKeyManager struct {
	Client client.Client
	Reader client.Reader
	Secret types.NamespacedName
	Policy SigningPolicy
	Clock  clock.PassiveClock
	Log    logr.Logger
	// Generate makes one signing key PEM; defaults to NewSigningKeyPEM(Policy.Algorithm).
	Generate func() ([]byte, error)
	// Recheck is the longest the Secret goes unread when no watch event arrives: a
	// backstop for a missed event, not the way changes are noticed. Default a minute;
	// tests set it long to prove the watch alone is enough.
	Recheck time.Duration

	wakeOnce sync.Once
	wake     chan struct{}
}

// SetupWithManager adds the manager and its watch to mgr. The watch is a cache of its
// own holding the one Secret (namespace and metadata.name field selector): the
// manager's cache holds only key Secrets (CacheOptions), and widening it would cache
// every Secret of the cluster. The watch runs on every replica (it is cheap); only
// the leader reconciles.
func (m *SigningKeyManager) SetupWithManager(mgr ctrl.Manager) error {
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme:     mgr.GetScheme(),
		HTTPClient: mgr.GetHTTPClient(),
		Mapper:     mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{&corev1.Secret{}: {
			Namespaces: map[string]cache.Config{m.Secret.Namespace: {}},
			Field:      fields.OneTermEqualSelector("metadata.name", m.Secret.Name),
			// The watch only wakes the loop, which reads the Secret live: the signing
			// keys are not kept in memory (on every replica) for it.
			Transform: dropData,
		}},
	})
	if err != nil {
		return fmt.Errorf("create the cache of signing-key Secret %s: %w", m.Secret, err)
	}
	// Before the cache starts, GetInformer only registers the informer.
	inf, err := c.GetInformer(context.Background(), &corev1.Secret{})
	if err != nil {
		return fmt.Errorf("informer for signing-key Secret %s: %w", m.Secret, err)
	}
	if _, err := inf.AddEventHandler(m.eventHandler()); err != nil {
		return fmt.Errorf("watch signing-key Secret %s: %w", m.Secret, err)
	}
	if err := mgr.Add(c); err != nil {
		return fmt.Errorf("add the cache of signing-key Secret %s: %w", m.Secret, err)
	}
	if err := mgr.Add(m); err != nil {
		return fmt.Errorf("add signing-key manager: %w", err)
	}
	return nil
}

// dropData keeps a Secret's metadata only, without managedFields.
func dropData(obj any) (any, error) {
	if s, ok := obj.(*corev1.Secret); ok {
		s.Data, s.StringData, s.ManagedFields = nil, nil, nil
	}
	return obj, nil
}

// eventHandler wakes the loop on every event of the watched Secret; a deletion is
// logged, as it is how an operator answers a compromised signing key.
func (m *SigningKeyManager) eventHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { m.Wake() },
		UpdateFunc: func(_, _ any) { m.Wake() },
		DeleteFunc: func(any) {
			m.Log.Info("signing-key Secret deleted; writing new signing keys", "secret", m.Secret.String())
			m.Wake()
		},
	}
}

// Wake makes the loop reconcile now instead of at its next timer. Wakes that arrive
// while one is pending coalesce; it never blocks, so informer handlers may call it.
func (m *SigningKeyManager) Wake() {
	select {
	case m.wakeChan() <- struct{}{}:
	default:
	}
}

func (m *SigningKeyManager) wakeChan() chan struct{} {
	m.wakeOnce.Do(func() { m.wake = make(chan struct{}, 1) })
	return m.wake
}

// Start reconciles until ctx is done (manager.Runnable): when woken by the watch, when
// the plan asks (rotation, dropping the previous key), and at least every Recheck.
func (m *SigningKeyManager) Start(ctx context.Context) error {
	recheck := m.Recheck
	if recheck <= 0 {
		recheck = signingRecheck
	}
	wake := m.wakeChan()
	for {
		wait, err := m.Reconcile(ctx)
		if err != nil {
			m.Log.Error(err, "signing-key Secret not reconciled; retrying", "secret", m.Secret.String())
			wait = signingRetry
		}
		timer := time.NewTimer(min(wait, recheck))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// NeedLeaderElection is true: only the leader rotates.
func (m *SigningKeyManager) NeedLeaderElection() bool { return true }

// Reconcile brings the Secret to the planned state once and returns when to look again.
func (m *SigningKeyManager) Reconcile(ctx context.Context) (time.Duration, error) {
	s := &corev1.Secret{}
	err := m.Reader.Get(ctx, m.Secret, s)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, fmt.Errorf("get Secret %s: %w", m.Secret, err)
	}
	if err == nil && s.Type != SigningKeyType {
		return signingRecheck, fmt.Errorf("the Secret %s exists with type %q, not %s: refusing to touch it", m.Secret, s.Type, SigningKeyType)
	}
	rotatedAt, _ := time.Parse(time.RFC3339, s.Annotations[AnnotationSigningRotatedAt])
	gen := m.Generate
	if gen == nil {
		gen = func() ([]byte, error) { return NewSigningKeyPEM(m.Policy.Algorithm) }
	}
	plan, err := PlanSigningKeys(s.Data, rotatedAt, m.Clock.Now(), m.Policy, gen)
	if err != nil {
		return 0, err
	}
	if !plan.Changed {
		return plan.RequeueAfter, nil
	}
	ac := corev1ac.Secret(m.Secret.Name, m.Secret.Namespace).
		WithType(SigningKeyType).
		WithAnnotations(map[string]string{AnnotationSigningRotatedAt: plan.RotatedAt.UTC().Format(time.RFC3339)}).
		WithData(plan.Data)
	if s.ResourceVersion != "" {
		ac.WithResourceVersion(s.ResourceVersion)
	}
	if err := m.Client.Apply(ctx, ac, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		// The message is logged: keep key material an admission webhook may quote out of it.
		return 0, fmt.Errorf("apply Secret %s (%s): %s", m.Secret, apierrors.ReasonForError(err), redact(statusMessage(err), plan.Data))
	}
	m.Log.Info("signing keys updated", "secret", m.Secret.String(), "rotated", plan.Rotated,
		"published", len(plan.Data), "nextRotation", plan.RotatedAt.Add(m.Policy.Every).UTC().Format(time.RFC3339))
	return plan.RequeueAfter, nil
}
