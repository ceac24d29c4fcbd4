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

package testenv

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// KeyHistory watches one ServiceKey and its Secret and records, for every key ID, the
// etcd revision (resourceVersion) at which it first appeared in the status and in the
// Secret. The fault tests check the crash-safety invariant with it: every key a pod
// could load from the Secret was published before it got there.
type KeyHistory struct {
	mu        sync.Mutex
	published map[string]int64
	handedOut map[string]int64
	order     []string // key IDs in the order they reached the Secret
	errs      []error
	cancel    context.CancelFunc
	done      sync.WaitGroup
}

// WatchKeys lists the ServiceKey namespace/name and its Secret secretName, records
// what they hold now (keys already in the status count as published before), and
// follows both from there; it returns once the lists are done, so nothing that
// happens after it returns is missed. Call Stop when done.
func WatchKeys(ctx context.Context, c client.WithWatch, namespace, name, secretName string) (*KeyHistory, error) {
	h := &KeyHistory{published: map[string]int64{}, handedOut: map[string]int64{}}
	lists := []client.ObjectList{&v1.ServiceKeyList{}, &corev1.SecretList{}}
	names := []string{name, secretName}
	rvs := make([]string, len(lists))
	for i, list := range lists {
		opts := &client.ListOptions{Namespace: namespace, FieldSelector: fields.OneTermEqualSelector("metadata.name", names[i])}
		if err := c.List(ctx, list, opts); err != nil {
			return nil, fmt.Errorf("list %T %s/%s: %w", list, namespace, names[i], err)
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return nil, err
		}
		for _, item := range items {
			h.record(item.(client.Object), true)
		}
		rvs[i] = list.(metav1.ListInterface).GetResourceVersion()
	}
	follow, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done.Add(len(lists))
	for i, list := range lists {
		go h.follow(follow, c, list, namespace, names[i], rvs[i])
	}
	return h, nil
}

// follow watches one object by name from resourceVersion rv, re-establishing the
// watch from the last resourceVersion seen whenever the server closes it. A watch
// that cannot resume (410 Gone: events were missed) ends the history with an error
// for Check, rather than a relist that would silently skip what happened in between.
func (h *KeyHistory) follow(ctx context.Context, c client.WithWatch, list client.ObjectList, namespace, name, rv string) {
	defer h.done.Done()
	for ctx.Err() == nil {
		w, err := c.Watch(ctx, list, client.InNamespace(namespace), &client.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("metadata.name", name),
			Raw:           &metav1.ListOptions{ResourceVersion: rv},
		})
		if err == nil {
			var stop bool
			rv, stop = h.consume(w, rv)
			w.Stop()
			if stop {
				return
			}
		}
		select { // the API server may be down in a fault test: ask again, politely
		case <-ctx.Done():
		case <-time.After(PollInterval):
		}
	}
}

// consume records the watch's events until it closes and returns the last
// resourceVersion seen, and whether the history must stop (an error event).
func (h *KeyHistory) consume(w watch.Interface, rv string) (string, bool) {
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			h.mu.Lock()
			h.errs = append(h.errs, fmt.Errorf("watch ended with an error after revision %s: the key history is incomplete", rv))
			h.mu.Unlock()
			return rv, true
		}
		if ev.Type != watch.Added && ev.Type != watch.Modified {
			continue
		}
		obj, ok := ev.Object.(client.Object)
		if !ok {
			continue
		}
		rv = obj.GetResourceVersion()
		h.record(obj, false)
	}
	return rv, false
}

// record notes the keys obj holds at its revision; existing (what the first list
// found) counts the status's keys as published at revision 0, before anything the
// history follows.
func (h *KeyHistory) record(obj client.Object, existing bool) {
	rev, err := strconv.ParseInt(obj.GetResourceVersion(), 10, 64)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.errs = append(h.errs, fmt.Errorf("resourceVersion %q: %w", obj.GetResourceVersion(), err))
		return
	}
	switch o := obj.(type) {
	case *v1.ServiceKey:
		if existing {
			rev = 0
		}
		for _, k := range o.Status.Keys {
			if _, seen := h.published[k.KeyID]; !seen {
				h.published[k.KeyID] = rev
			}
		}
	case *corev1.Secret:
		id := KeyIDOf(o.Data[v1.SecretKeyPrivateKey])
		if id == "" {
			return
		}
		if _, seen := h.handedOut[id]; !seen {
			h.handedOut[id] = rev
			h.order = append(h.order, id)
		}
	}
}

// HandedOut are the IDs of the keys seen in the Secret, in order.
func (h *KeyHistory) HandedOut() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.order...)
}

// Published are the IDs of every key seen in the status, sorted.
func (h *KeyHistory) Published() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []string
	for id := range h.published {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Check returns an error for every key that reached the Secret without having been
// published in status at an earlier revision.
func (h *KeyHistory) Check() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	errs := append([]error(nil), h.errs...)
	for _, id := range h.order {
		pub, ok := h.published[id]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("key %s reached the Secret (revision %d) and was never published", id, h.handedOut[id]))
		case pub >= h.handedOut[id]:
			errs = append(errs, fmt.Errorf("key %s reached the Secret at revision %d, before it was published (revision %d)", id, h.handedOut[id], pub))
		}
	}
	return errors.Join(errs...)
}

// Stop ends the watches.
func (h *KeyHistory) Stop() {
	h.cancel()
	h.done.Wait()
}

// KeyIDOf is the key ID of a PEM private key, as the Secret holds it; "" when it does
// not parse.
func KeyIDOf(pem []byte) string {
	key, _, err := keyutil.ParsePrivateKey(pem)
	if err != nil {
		return ""
	}
	id, err := keyutil.KeyID(&key.PublicKey)
	if err != nil {
		return ""
	}
	return id
}

// WatchKeysFor starts WatchKeys with a watching client of cfg for the ServiceKey
// namespace/name and its Secret of the same name, stopped when the test ends.
func WatchKeysFor(t testing.TB, cfg *rest.Config, scheme *runtime.Scheme, namespace, name string) *KeyHistory {
	t.Helper()
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	h, err := WatchKeys(context.Background(), c, namespace, name, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	return h
}
