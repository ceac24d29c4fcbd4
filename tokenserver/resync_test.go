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

package tokenserver

import (
	"context"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

func resyncKey(name, uid, rv string, suspended bool) *v1.ServiceKey {
	return &v1.ServiceKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, UID: types.UID(uid), ResourceVersion: rv},
		Spec:       v1.ServiceKeySpec{Suspended: suspended},
	}
}

// TestIndexResync: a fresh list after an outage drops deleted keys and applies changes
// to records still as they were in the snapshot; whatever the informer delivered after
// the snapshot wins, and keys created meanwhile are left to the informer.
func TestIndexResync(t *testing.T) {
	cases := map[string]struct {
		listed        []*v1.ServiceKey
		informer      *v1.ServiceKey // delivered between snapshot and Resync (nil: nothing)
		informerDel   bool           // the informer delivered the delete instead
		wantPresent   bool
		wantSuspend   bool
		wantUID       string
		wantUpdated   int
		wantDeleted   int
		wantForgotten bool
	}{
		"unchanged":              {listed: []*v1.ServiceKey{resyncKey("app", "u1", "1", false)}, wantPresent: true, wantUID: "u1"},
		"deleted meanwhile":      {listed: nil, wantDeleted: 1, wantForgotten: true},
		"suspended meanwhile":    {listed: []*v1.ServiceKey{resyncKey("app", "u1", "2", true)}, wantPresent: true, wantSuspend: true, wantUID: "u1", wantUpdated: 1},
		"deleted and recreated":  {listed: []*v1.ServiceKey{resyncKey("app", "u2", "3", false)}, wantPresent: true, wantUID: "u2", wantUpdated: 1},
		"informer was faster":    {listed: []*v1.ServiceKey{resyncKey("app", "u1", "2", true)}, informer: resyncKey("app", "u1", "3", false), wantPresent: true, wantUID: "u1"},
		"informer re-added":      {listed: nil, informer: resyncKey("app", "u3", "4", false), wantPresent: true, wantUID: "u3"},
		"informer deleted first": {listed: []*v1.ServiceKey{resyncKey("app", "u1", "2", true)}, informerDel: true, wantForgotten: true},
		"created during outage":  {listed: []*v1.ServiceKey{resyncKey("app", "u1", "1", false), resyncKey("new", "n1", "5", false)}, wantPresent: true, wantUID: "u1"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ix := NewIndex(logr.Discard())
			forgotten := false
			ix.OnDelete(func(id string) { forgotten = forgotten || id == "team/app" })
			h := ix.Handler()
			h.OnAdd(resyncKey("app", "u1", "1", false), true)
			resync := ix.StartResync()
			switch {
			case tc.informer != nil:
				h.OnUpdate(nil, tc.informer)
			case tc.informerDel:
				h.OnDelete(resyncKey("app", "u1", "1", false))
			}
			for _, sk := range tc.listed { // one page per object, as a paged list delivers them
				resync.Apply([]v1.ServiceKey{*sk})
			}
			updated, deleted := resync.Finish()
			if updated != tc.wantUpdated || deleted != tc.wantDeleted {
				t.Errorf("Resync = %d updated, %d deleted; want %d, %d", updated, deleted, tc.wantUpdated, tc.wantDeleted)
			}
			rec, ok := ix.Record("team/app")
			if ok != tc.wantPresent {
				t.Fatalf("team/app present = %v, want %v", ok, tc.wantPresent)
			}
			if ok && (string(rec.UID) != tc.wantUID || rec.Suspended != tc.wantSuspend) {
				t.Errorf("record UID %s suspended %v; want %s, %v", rec.UID, rec.Suspended, tc.wantUID, tc.wantSuspend)
			}
			if _, ok := ix.Record("team/new"); ok {
				t.Error("a key created during the outage was added by Resync; that is the informer's job")
			}
			if forgotten != tc.wantForgotten {
				t.Errorf("delete callbacks ran = %v, want %v", forgotten, tc.wantForgotten)
			}
		})
	}
}

// TestResyncSigningKeys: after an outage the signing-key Secret is read live. A
// Secret deleted meanwhile drops the keys, a changed one is loaded, an unchanged one
// is left alone, and an event the informer delivered during the read wins.
func TestResyncSigningKeys(t *testing.T) {
	ref := types.NamespacedName{Namespace: "servicekey-system", Name: "signing"}
	secret := func(rv string, key []byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name, ResourceVersion: rv},
			Data: map[string][]byte{SigningCurrent: key}}
	}
	loaded, other := ecPEM(t), ecPEM(t)
	cases := map[string]struct {
		live        *corev1.Secret // nil: deleted
		informerHit bool           // the informer delivers a newer version during the read
		wantKeys    bool
		wantCurrent []byte
	}{
		"deleted during the outage": {live: nil, wantKeys: false},
		"changed during the outage": {live: secret("2", other), wantKeys: true, wantCurrent: other},
		"unchanged":                 {live: secret("1", loaded), wantKeys: true, wantCurrent: loaded},
		"informer was faster":       {live: nil, informerHit: true, wantKeys: true, wantCurrent: other},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := NewServer("https://t", "https://t/oauth2/token", &TokenHandler{Exchanger: &Exchanger{}}, func() bool { return true }, logr.Discard())
			h := s.SigningSecretHandler()
			h.OnAdd(secret("1", loaded), true)
			b := fake.NewClientBuilder()
			if tc.live != nil {
				b = b.WithObjects(tc.live)
			}
			reader := interceptor.NewClient(b.Build(), interceptor.Funcs{
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					if tc.informerHit {
						h.OnUpdate(nil, secret("3", other))
					}
					return c.Get(ctx, key, obj, opts...)
				},
			})
			if err := s.ResyncSigningKeys(context.Background(), reader, ref); err != nil {
				t.Fatal(err)
			}
			ks := s.SigningKeys()
			if (ks != nil) != tc.wantKeys {
				t.Fatalf("keys loaded = %v, want %v", ks != nil, tc.wantKeys)
			}
			if ks != nil {
				want, err := LoadSigningKeys(map[string][]byte{SigningCurrent: tc.wantCurrent})
				if err != nil {
					t.Fatal(err)
				}
				if ks.Current.ID != want.Current.ID {
					t.Errorf("current key %s, want %s", ks.Current.ID, want.Current.ID)
				}
			}
		})
	}
}
