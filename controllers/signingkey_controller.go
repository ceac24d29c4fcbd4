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
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SigningKeyType is the type of the token server's signing-key Secret.
const SigningKeyType = "auth.servicekey.dev/signing-key"

// signingRecheck bounds how long a deleted or edited signing-key Secret goes unnoticed.
const signingRecheck = time.Minute

// SigningKeyManager keeps the token server's signing-key Secret: it creates the keys,
// rotates them on schedule and drops previous keys once their tokens expired. It is a
// single object reconciled on a timer (leader-elected runnable) and read live, so the
// controller's Secret cache stays limited to key Secrets.
type SigningKeyManager struct {
	Client client.Client
	Reader client.Reader
	Secret types.NamespacedName
	Policy SigningPolicy
	Clock  clock.PassiveClock
	Log    logr.Logger
	// Generate makes one signing key PEM; defaults to NewSigningKeyPEM(Policy.Algorithm).
	Generate func() ([]byte, error)
}

// Start reconciles until ctx is done (manager.Runnable).
func (m *SigningKeyManager) Start(ctx context.Context) error {
	for {
		wait, err := m.Reconcile(ctx)
		if err != nil {
			m.Log.Error(err, "signing-key Secret not reconciled; retrying", "secret", m.Secret.String())
			wait = 10 * time.Second
		}
		wait = min(wait, signingRecheck)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
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
		return 0, fmt.Errorf("apply Secret %s: %w", m.Secret, err)
	}
	m.Log.Info("signing keys updated", "secret", m.Secret.String(), "rotated", plan.Rotated,
		"published", len(plan.Data), "nextRotation", plan.RotatedAt.Add(m.Policy.Every).UTC().Format(time.RFC3339))
	return plan.RequeueAfter, nil
}
