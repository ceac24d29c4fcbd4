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
	"fmt"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// Refuse injects a fault the way a webhook, a quota or an etcd hiccup would: it
// installs a ValidatingAdmissionPolicy (and its binding) that refuses, with 403
// Forbidden, create and update requests on resource of group when the CEL expression
// holds. It polls probe (which reports whether a write it tries is refused) until the
// API server enforces the policy, and returns the function that lifts it.
func Refuse(ctx context.Context, c client.Client, name, group, resource, expression string, probe func() bool) (lift func() error, err error) {
	policy := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
					Rule:       admissionv1.Rule{APIGroups: []string{group}, APIVersions: []string{"*"}, Resources: []string{resource}},
				},
			}}},
			Validations: []admissionv1.Validation{{Expression: "!(" + expression + ")", Message: "refused by fault injection " + name,
				Reason: ptr.To(metav1.StatusReasonForbidden)}},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: name, ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}},
	}
	lift = func() error {
		for _, obj := range []client.Object{binding, policy} {
			if err := c.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete %T %s: %w", obj, name, err)
			}
		}
		return nil
	}
	for _, obj := range []client.Object{policy, binding} {
		if err := c.Create(ctx, obj); err != nil {
			_ = lift()
			return nil, fmt.Errorf("create %T %s: %w", obj, name, err)
		}
	}
	if err := Poll("the admission policy "+name+" to be enforced", time.Minute, func() (bool, string) { return probe(), "a probe write was accepted" }); err != nil {
		_ = lift()
		return nil, err
	}
	return lift, nil
}

// RefuseKeySecrets refuses, through an admission policy named policy, every write of a
// Secret labelled as the key Secret of ServiceKey namespace/name, and returns the
// function that lifts it.
func RefuseKeySecrets(ctx context.Context, c client.Client, policy, namespace, name string) (lift func() error, err error) {
	label := "has(object.metadata.labels) && '" + v1.LabelServiceKey + "' in object.metadata.labels && object.metadata.labels['" +
		v1.LabelServiceKey + "'] == '" + name + "'"
	return Refuse(ctx, c, policy, "", "secrets", label, func() bool {
		p := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-probe", Namespace: namespace, Labels: map[string]string{v1.LabelServiceKey: name}}}
		err := c.Create(ctx, p)
		if err == nil {
			_ = c.Delete(ctx, p)
		}
		return apierrors.IsForbidden(err)
	})
}
