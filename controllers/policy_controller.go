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

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// PolicyReconciler reports on each ServiceKeyPolicy: whether its namespaceSelector is
// usable and how many namespaces it selects. A policy that selects nothing, or whose
// selector cannot be used, permits nothing; the admin sees that on the policy (Ready
// False, a Warning Event) instead of only on the ServiceKeys it was meant to permit.
// Judging ServiceKeys is the ServiceKeyReconciler's concern, not this one's.
type PolicyReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
}

// +kubebuilder:rbac:groups=auth.servicekey.dev,resources=servicekeypolicies/status,verbs=get;patch

// Reconcile writes one policy's status.
func (r *PolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &v1.ServiceKeyPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	namespaces := policy.NamespaceList()
	if err := r.Client.List(ctx, namespaces); err != nil {
		return ctrl.Result{}, fmt.Errorf("list namespaces: %w", err)
	}
	st, warning := policyStatus(p, namespaces.Items)
	if equality.Semantic.DeepEqual(st, p.Status) {
		return ctrl.Result{}, nil
	}
	if err := r.applyStatus(ctx, p, st); err != nil {
		return ctrl.Result{}, err
	}
	if warning && r.Recorder != nil {
		c := meta.FindStatusCondition(st.Conditions, v1.ConditionReady)
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, c.Reason, "Evaluate", "%s", c.Message)
	}
	return ctrl.Result{}, nil
}

// policyStatus computes the status and whether its Ready reason is a new warning.
func policyStatus(p *v1.ServiceKeyPolicy, namespaces []metav1.PartialObjectMetadata) (v1.ServiceKeyPolicyStatus, bool) {
	st := v1.ServiceKeyPolicyStatus{
		Conditions:         append([]metav1.Condition(nil), p.Status.Conditions...),
		ObservedGeneration: p.Generation,
	}
	c := metav1.Condition{Type: v1.ConditionReady, ObservedGeneration: p.Generation}
	compiled := policy.Compile(p)
	if err := compiled.Err(); err != nil {
		c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonInvalidSelector
		c.Message = "namespaceSelector cannot be used (" + err.Error() + "); this policy permits nothing"
	} else {
		for _, ns := range namespaces {
			if compiled.Selects(ns.Labels) {
				st.Namespaces++
			}
		}
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonPolicyActive
		c.Message = fmt.Sprintf("selects %d namespace(s)", st.Namespaces)
		if st.Namespaces == 0 {
			c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonSelectsNothing
			c.Message = "namespaceSelector selects no namespace; this policy permits nothing"
		}
	}
	prev := meta.FindStatusCondition(p.Status.Conditions, v1.ConditionReady)
	warning := c.Status == metav1.ConditionFalse && (prev == nil || prev.Reason != c.Reason)
	meta.SetStatusCondition(&st.Conditions, c)
	return st, warning
}

func (r *PolicyReconciler) applyStatus(ctx context.Context, p *v1.ServiceKeyPolicy, st v1.ServiceKeyPolicyStatus) error {
	status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return fmt.Errorf("convert status: %w", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": status}}
	u.SetGroupVersionKind(v1.GroupVersion.WithKind("ServiceKeyPolicy"))
	u.SetName(p.Name)
	err = r.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(FieldOwner), client.ForceOwnership)
	if err != nil {
		return fmt.Errorf("apply status of ServiceKeyPolicy %s: %w", p.Name, err)
	}
	return nil
}

// SetupWithManager registers the controller: policies (spec changes) and namespaces
// (created, deleted or relabelled: every policy's count may change).
func (r *PolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	allPolicies := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list v1.ServiceKeyPolicyList
		if err := r.Client.List(ctx, &list); err != nil {
			return nil
		}
		out := make([]reconcile.Request, len(list.Items))
		for i := range list.Items {
			out[i].Name = list.Items[i].Name
		}
		return out
	})
	err := ctrl.NewControllerManagedBy(mgr).
		For(&v1.ServiceKeyPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesMetadata(&corev1.Namespace{}, allPolicies, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Named("servicekeypolicy").
		Complete(r)
	if err != nil {
		return fmt.Errorf("set up ServiceKeyPolicy controller: %w", err)
	}
	return nil
}
