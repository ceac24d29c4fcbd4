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

package controllers_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/controllers"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// TestLostReplies: a write the API server applied but whose reply never came back
// (a timeout, a dropped connection) must not cost a second key, leave the Secret and
// the status apart, or let a key already promoted be reused as a "new" one.
func TestLostReplies(t *testing.T) {
	ctx := context.Background()
	live := raceNamespace(t)
	lost := apierrors.NewTimeoutError("the reply was lost (fault injection)", 1)
	cases := map[string]struct {
		statusWrite int32 // lose the reply to this status write of the rotation (1 publish, 2 promote); 0: none
		secretWrite bool  // lose the reply to the Secret write
	}{
		"promotion applied, reply lost":   {statusWrite: 2},
		"publication applied, reply lost": {statusWrite: 1},
		"Secret applied, reply lost":      {secretWrite: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var armed atomic.Bool
			var statusWrites atomic.Int32
			racy := interceptor.NewClient(live, interceptor.Funcs{
				SubResourceApply: func(ctx context.Context, c client.Client, sub string, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
					err := c.SubResource(sub).Apply(ctx, obj, opts...)
					if err == nil && armed.Load() && statusWrites.Add(1) == tc.statusWrite {
						return lost
					}
					return err
				},
				Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
					err := c.Apply(ctx, obj, opts...)
					if err == nil && armed.Load() && tc.secretWrite {
						armed.Store(false)
						return lost
					}
					return err
				},
			})
			keys := &countingKeys{}
			r := &controllers.ServiceKeyReconciler{Client: racy, APIReader: live, Clock: clock.RealClock{}, Keys: keys}
			sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("lost-%d", tc.statusWrite), Namespace: raceNS}}
			if tc.secretWrite {
				sk.Name = "lost-secret"
			}
			if err := k8s.Create(ctx, sk); err != nil {
				t.Fatal(err)
			}
			ids := map[string]bool{}
			for round := 1; round <= 3; round++ { // issue, the rotation under fault, a rotation after it
				if round > 1 {
					if err := testenv.UpdateServiceKey(ctx, live, client.ObjectKeyFromObject(sk), func(sk *v1.ServiceKey) {
						sk.Annotations = map[string]string{v1.AnnotationRotate: fmt.Sprint(round)}
					}); err != nil {
						t.Fatal(err)
					}
				}
				armed.Store(round == 2)
				statusWrites.Store(0)
				ids[settle(t, r, live, sk, round)] = true
			}
			if n := keys.n.Load(); n != 3 || len(ids) != 3 {
				t.Errorf("%d key pairs generated, %d distinct Active keys, for one issue and two rotations; want 3 and 3", n, len(ids))
			}
		})
	}
}

// settle reconciles until the Secret holds the Active key, nothing is Pending and the
// rotation request of round (1: none) is handled; it returns the Active key's ID.
func settle(t *testing.T, r *controllers.ServiceKeyReconciler, c client.Client, sk *v1.ServiceKey, round int) string {
	t.Helper()
	ctx := context.Background()
	state := ""
	for range 6 {
		_, _ = r.Reconcile(ctx, reqFor(sk)) // errors are the injected faults; the next call must recover
		got, s := &v1.ServiceKey{}, &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(sk), got); err != nil {
			t.Fatal(err)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(sk), s); err != nil {
			state = err.Error()
			continue
		}
		active, pending := "", false
		for _, k := range got.Status.Keys {
			active = map[bool]string{true: k.KeyID, false: active}[k.State == v1.KeyActive]
			pending = pending || k.State == v1.KeyPending
		}
		handled := round == 1 || s.Annotations[controllers.AnnotationRotationHandled] == fmt.Sprint(round)
		if active != "" && !pending && handled && testenv.KeyIDOf(s.Data[v1.SecretKeyPrivateKey]) == active {
			return active
		}
		state = fmt.Sprintf("keys %v, Secret holds %.8s", keyStates(got), testenv.KeyIDOf(s.Data[v1.SecretKeyPrivateKey]))
	}
	t.Fatalf("round %d did not settle in 6 reconciles: %s", round, state)
	return ""
}
