//go:build e2e

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

package e2e

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/stack"
)

// TestChartUpgrade runs `helm upgrade` with a changed value on the live release: the
// new value reaches the Deployment, the CRD stays (with its keep policy), and
// existing ServiceKeys keep their keys and Secrets untouched.
func TestChartUpgrade(t *testing.T) {
	ctx := context.Background()
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "ledger", Namespace: appNamespace},
		Spec: v1.ServiceKeySpec{Scopes: []string{"ledger:read"}}}
	if err := env.Client.Create(ctx, sk); err != nil {
		t.Fatal(err)
	}
	before := waitFor(t, sk, "Ready", func(sk *v1.ServiceKey) bool { return ready(sk, v1.ReasonIssued) })
	secretBefore := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: appNamespace, Name: before.Status.SecretName}, secretBefore); err != nil {
		t.Fatal(err)
	}

	defaultPolicy := &v1.ServiceKeyPolicy{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: stack.Release + "-default"}, defaultPolicy); err != nil {
		t.Fatalf("the chart's default policy: %v", err)
	}

	if err := installed.Helm(ctx, "upgrade", stack.Release, stack.ChartDir(), "--namespace", stack.Namespace,
		"--reuse-values", "--set", "tokenServer.rateLimit=11"); err != nil {
		t.Fatal(err)
	}
	// The default policy is an install hook: an upgrade must not delete and recreate it
	// (every grant would be refused in between, every key flap to PolicyDenied).
	policyAfter := &v1.ServiceKeyPolicy{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(defaultPolicy), policyAfter); err != nil {
		t.Fatalf("the default policy after the upgrade: %v", err)
	}
	if policyAfter.UID != defaultPolicy.UID || policyAfter.ResourceVersion != defaultPolicy.ResourceVersion {
		t.Errorf("the upgrade replaced or rewrote the default policy (uid %s → %s)", defaultPolicy.UID, policyAfter.UID)
	}
	out, err := installed.HelmOutput(ctx, "get", "manifest", stack.Release, "--namespace", stack.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := stack.ParseObjects(out)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := objs.Component(stack.Release + "-token-server")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ts.Args, "--rate-limit=11") || !slices.Contains(ts.Args, "--issuer="+installed.Issuer) {
		t.Errorf("after the upgrade the token server args are %v, want the new rate limit and the reused issuer", ts.Args)
	}

	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: stack.CRDName}, crd); err != nil {
		t.Fatalf("the CRD after the upgrade: %v", err)
	}
	if crd.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the CRD lacks helm.sh/resource-policy=keep: helm uninstall would delete every ServiceKey")
	}
	after := &v1.ServiceKey{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(sk), after); err != nil {
		t.Fatalf("the ServiceKey after the upgrade: %v", err)
	}
	if after.UID != before.UID || after.Status.Keys[0].KeyID != before.Status.Keys[0].KeyID {
		t.Errorf("the upgrade replaced the ServiceKey or its key")
	}
	secretAfter := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(secretBefore), secretAfter); err != nil {
		t.Fatal(err)
	}
	if secretAfter.ResourceVersion != secretBefore.ResourceVersion {
		t.Errorf("the upgrade rewrote the key Secret")
	}
}
