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
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/controllers"
)

// TestRotationSurvivesConcurrentLastUsedWrite: the token server writes
// status.lastUsedTime (its own field) between the controller's read and its status
// write. The rotation must still publish the key it wrote into the Secret, not leave
// an unpublished key behind (which the next reconcile would take for tampering).
func TestRotationSurvivesConcurrentLastUsedWrite(t *testing.T) {
	ctx := context.Background()
	live := raceNamespace(t)
	var armed atomic.Bool
	racy := interceptor.NewClient(live, interceptor.Funcs{
		SubResourceApply: func(ctx context.Context, c client.Client, sub string, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
			if armed.CompareAndSwap(true, false) {
				writeLastUsed(t, live, raceNS, "race")
			}
			return c.SubResource(sub).Apply(ctx, obj, opts...)
		},
	})
	keys := &countingKeys{}
	r := &controllers.ServiceKeyReconciler{Client: racy, APIReader: live, Clock: clock.RealClock{}, Keys: keys}
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "race", Namespace: raceNS}}
	if err := k8s.Create(ctx, sk); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(ctx, reqFor(sk)); err != nil {
		t.Fatal(err)
	}
	if err := live.Get(ctx, client.ObjectKeyFromObject(sk), sk); err != nil {
		t.Fatal(err)
	}
	sk.Annotations = map[string]string{v1.AnnotationRotate: "1"}
	if err := live.Update(ctx, sk); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	// The first attempt loses the race on publishing the new key and asks to be run
	// again; the second publishes the same key (staged in memory), writes the Secret
	// and promotes it.
	for range 2 {
		if _, err := r.Reconcile(ctx, reqFor(sk)); err != nil {
			t.Fatal(err)
		}
	}
	if armed.Load() {
		t.Fatal("the concurrent write was not injected")
	}
	if n := keys.n.Load(); n != 2 {
		t.Errorf("%d key pairs generated for one issue and one rotation, want 2", n)
	}
	got := &v1.ServiceKey{}
	if err := live.Get(ctx, client.ObjectKeyFromObject(sk), got); err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{}
	if err := live.Get(ctx, client.ObjectKey{Namespace: raceNS, Name: "race"}, s); err != nil {
		t.Fatal(err)
	}
	key, _, err := keyutil.ParsePrivateKey(s.Data[v1.SecretKeyPrivateKey])
	if err != nil {
		t.Fatal(err)
	}
	id, _ := keyutil.KeyID(&key.PublicKey)
	if len(got.Status.Keys) != 2 || got.Status.Keys[0].KeyID != id || got.Status.LastUsedTime == nil {
		t.Fatalf("after the rotation: keys %v, Secret holds %s, lastUsedTime %v", keyStates(got), id[:8], got.Status.LastUsedTime)
	}
}

// countingKeys counts the key pairs it generates.
type countingKeys struct{ n atomic.Int32 }

func (c *countingKeys) New(bits int32, enc v1.PrivateKeyEncoding) (*controllers.NewKey, error) {
	c.n.Add(1)
	return controllers.RSAKeys{}.New(bits, enc)
}

// writeLastUsed writes status.lastUsedTime as the token server does.
func writeLastUsed(t *testing.T, c client.Client, namespace, name string) {
	t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"lastUsedTime": time.Now().UTC().Format(time.RFC3339)}}}
	u.SetGroupVersionKind(v1.GroupVersion.WithKind("ServiceKey"))
	u.SetNamespace(namespace)
	u.SetName(name)
	if err := c.Status().Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner("servicekey-token-server"), client.ForceOwnership); err != nil {
		t.Fatalf("concurrent lastUsedTime write: %v", err)
	}
}

// raceNamespace creates raceNS, whose ServiceKeys the suite's manager does not cache
// (see startManager), so that only a test's own reconciler acts there; the open
// policy permits its keys. It returns a live client (no cache) for the test's
// reconciler to wrap.
func raceNamespace(t *testing.T) client.WithWatch {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: raceNS, Labels: map[string]string{openLabel: "true"}}}
	if err := k8s.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	live, err := client.NewWithWatch(adminConfig, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return live
}
