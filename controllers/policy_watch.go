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
	"maps"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// readPolicies reads a namespace's labels (nil when the namespace is unknown) and
// every ServiceKeyPolicy, compiled, through rd (the cache).
func readPolicies(ctx context.Context, rd client.Reader, namespace string) (map[string]string, []policy.Policy, error) {
	var nsLabels map[string]string
	ns := policy.Namespace()
	switch err := rd.Get(ctx, types.NamespacedName{Name: namespace}, ns); {
	case err == nil:
		nsLabels = map[string]string{}
		maps.Copy(nsLabels, ns.Labels)
	case !apierrors.IsNotFound(err):
		return nil, nil, fmt.Errorf("get Namespace %s: %w", namespace, err)
	}
	var list v1.ServiceKeyPolicyList
	if err := rd.List(ctx, &list); err != nil {
		return nil, nil, fmt.Errorf("list ServiceKeyPolicies: %w", err)
	}
	out := make([]policy.Policy, len(list.Items))
	for i := range list.Items {
		out[i] = policy.Compile(&list.Items[i])
	}
	return nsLabels, out, nil
}

type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]

// policyHandler enqueues the ServiceKeys of every namespace a changed policy selects
// now or selected before the change, so both a widened and a narrowed policy are
// re-evaluated at once.
func policyHandler(c client.Reader) handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q queue) { enqueueSelected(ctx, c, q, e.Object) },
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			enqueueSelected(ctx, c, q, e.ObjectOld, e.ObjectNew)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q queue) { enqueueSelected(ctx, c, q, e.Object) },
	}
}

func enqueueSelected(ctx context.Context, c client.Reader, q queue, objs ...client.Object) {
	var compiled []policy.Policy
	for _, o := range objs {
		if p, ok := o.(*v1.ServiceKeyPolicy); ok {
			compiled = append(compiled, policy.Compile(p))
		}
	}
	namespaces := policy.NamespaceList()
	if err := c.List(ctx, namespaces); err != nil {
		return // the cache is stopping; its restart re-lists every ServiceKey anyway
	}
	for _, ns := range namespaces.Items {
		for _, p := range compiled {
			if p.Selects(ns.Labels) {
				enqueueNamespace(ctx, c, q, ns.Name)
				break
			}
		}
	}
}

// namespaceHandler enqueues a namespace's ServiceKeys when its labels change, and
// when it reaches the cache: a ServiceKey seen before its namespace waited for it.
func namespaceHandler(c client.Reader) handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q queue) {
			enqueueNamespace(ctx, c, q, e.Object.GetName())
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			if !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) {
				enqueueNamespace(ctx, c, q, e.ObjectNew.GetName())
			}
		},
	}
}

func enqueueNamespace(ctx context.Context, c client.Reader, q queue, namespace string) {
	var keys v1.ServiceKeyList
	if err := c.List(ctx, &keys, client.InNamespace(namespace)); err != nil {
		return
	}
	for _, k := range keys.Items {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: k.Namespace, Name: k.Name}})
	}
}
