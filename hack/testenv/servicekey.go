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

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// ReadyReason is the reason of the ServiceKey's Ready condition once the controller
// has reconciled its current generation, and "" before.
func ReadyReason(sk *v1.ServiceKey) string {
	c := meta.FindStatusCondition(sk.Status.Conditions, v1.ConditionReady)
	if c == nil || c.ObservedGeneration != sk.Generation {
		return ""
	}
	return c.Reason
}

// UpdateServiceKey applies change to the latest version of a ServiceKey, as an admin
// editing it would, retrying when the write conflicts with the controller's.
func UpdateServiceKey(ctx context.Context, c client.Client, key client.ObjectKey, change func(*v1.ServiceKey)) error {
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		sk := &v1.ServiceKey{}
		if err := c.Get(ctx, key, sk); err != nil {
			return err
		}
		change(sk)
		return c.Update(ctx, sk)
	})
	if err != nil {
		return fmt.Errorf("update ServiceKey %s: %w", key, err)
	}
	return nil
}

// OpenPolicy is a ServiceKeyPolicy like the Helm chart's default: the namespaces
// selector selects may give their keys any scope and audience (wildcards, so never a
// reserved scope) and client secrets, but no custom subject. Suites create it for the
// namespaces whose tests are not about policy.
func OpenPolicy(name string, selector map[string]string) *v1.ServiceKeyPolicy {
	return &v1.ServiceKeyPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.ServiceKeyPolicySpec{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: selector},
			Allowed:           v1.AllowedPrivileges{Scopes: []string{"*"}, Audiences: []string{"*"}, ClientSecret: true},
		},
	}
}
