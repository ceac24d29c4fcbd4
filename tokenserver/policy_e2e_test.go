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

package tokenserver_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

// policyNamespace creates a namespace and a policy selecting only it.
func policyNamespace(t *testing.T, name string, spec v1.ServiceKeyPolicySpec) *v1.ServiceKeyPolicy {
	t.Helper()
	ctx := context.Background()
	label := map[string]string{"servicekey.test/policy": name}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: label}}); err != nil {
		t.Fatal(err)
	}
	spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: label}
	p := &v1.ServiceKeyPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// grantScope exchanges a fresh assertion asking for scope ("" = the key's scopes).
func grantScope(t *testing.T, kf keyutil.KeyFile, scope string) response {
	t.Helper()
	form := url.Values{"grant_type": {tokenserver.GrantTypeJWTBearer}, "assertion": {signAssertion(t, kf, nil)}}
	if scope != "" {
		form.Set("scope", scope)
	}
	return postForm(t, form)
}

// errorOf decodes an RFC 6749 §5.2 error body; a success body gives "issued" and
// never appears in test output (it holds an access token).
func errorOf(t *testing.T, r response) (code, description string) {
	t.Helper()
	if r.status == 200 {
		return "issued", ""
	}
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return e.Error, e.Description
}

// The token server judges the live spec itself: with the controller stopped, a scope
// added to the spec is refused at the next grant although status still says Ready.
func TestSpecEditWhileControllerStopped(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	policyNamespace(t, stoppableNS, v1.ServiceKeyPolicySpec{Allowed: v1.AllowedPrivileges{Scopes: []string{"read"}}})
	stopped, err := startController(ctx, testEnv, []string{stoppableNS})
	if err != nil {
		t.Fatal(err)
	}
	kf := readyKeyIn(t, stoppableNS, "app", v1.ServiceKeySpec{Scopes: []string{"read"}})
	if r := grantScope(t, kf, "read"); r.status != 200 {
		t.Fatalf("before the edit: %d %s", r.status, r.body)
	}
	stop()
	<-stopped
	key := types.NamespacedName{Namespace: stoppableNS, Name: "app"}
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"scopes":["read","admin"]}}`))
	if err := k8s.Patch(context.Background(), &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}}, patch); err != nil {
		t.Fatal(err)
	}
	want := "ServiceKey stoppable/app is refused by policy: not allowed by any ServiceKeyPolicy selecting namespace stoppable: scope admin (considered: stoppable)"
	eventually(t, "the edited key refused", func() (bool, string) {
		r := grantScope(t, kf, "read")
		code, desc := errorOf(t, r)
		return r.status == 400 && code == "invalid_scope" && desc == want, code + ": " + desc
	})
	sk := &v1.ServiceKey{}
	if err := k8s.Get(context.Background(), key, sk); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(sk.Status.Conditions, v1.ConditionReady) || sk.Status.ObservedGeneration == sk.Generation {
		t.Fatal("the controller was not stopped: the status already describes the edit")
	}
}

// Whoever can write status cannot widen a token with it: the subject comes from the
// spec, and a key no policy permits is refused whatever status says.
func TestForgedStatusWidensNothing(t *testing.T) {
	ctx := context.Background()
	permitted := readyKey(t, "forged-subject", v1.ServiceKeySpec{})
	forge(t, ns, "forged-subject", `{"status":{"subject":"system:masters"}}`)
	claims, _ := verifyAccessToken(t, accessToken(t, permitted))
	if claims.Subject != "system:servicekey:apps:forged-subject" {
		t.Errorf("token subject %q: the forged status subject was used", claims.Subject)
	}

	// A namespace no policy selects: the controller refuses the key and publishes no
	// public key; a forged status publishes one of the forger's own and says Ready.
	const denied = "no-policy"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: denied}}); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: denied}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the controller refuses the key", func() (bool, string) {
		sk := &v1.ServiceKey{}
		_ = k8s.Get(ctx, client.ObjectKey{Namespace: denied, Name: "app"}, sk)
		c := meta.FindStatusCondition(sk.Status.Conditions, v1.ConditionReady)
		return c != nil && c.Reason == v1.ReasonPolicyDenied, fmt.Sprint(c)
	})
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := keyutil.KeyID(&priv.PublicKey)
	pub, _ := keyutil.EncodePublicKey(&priv.PublicKey)
	pemKey, _ := keyutil.EncodePrivateKey(priv, v1.PKCS1)
	now := metav1.Now().UTC().Format(time.RFC3339)
	status, _ := json.Marshal(map[string]any{"status": map[string]any{
		"subject": "system:masters",
		"keys":    []map[string]any{{"keyID": id, "publicKey": pub, "created": now, "state": "Active"}},
		"conditions": []map[string]any{{"type": "Ready", "status": "True", "reason": "Issued", "message": "forged",
			"lastTransitionTime": now}},
	}})
	forge(t, denied, "app", string(status))
	kf := keyutil.KeyFile{ClientID: denied + "/app", KeyID: id, TokenURI: tokenURL, PrivateKey: string(pemKey)}
	eventually(t, "the forged key indexed and refused by policy", func() (bool, string) {
		r := grant(t, kf)
		code, desc := errorOf(t, r)
		return r.status == 400 && code == "unauthorized_client" &&
			desc == "ServiceKey no-policy/app is refused by policy: no ServiceKeyPolicy selects namespace no-policy", code + ": " + desc
	})
}

func forge(t *testing.T, namespace, name, status string) {
	t.Helper()
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if err := k8s.Status().Patch(context.Background(), sk, client.RawPatch(types.MergePatchType, []byte(status))); err != nil {
		t.Fatalf("forge status: %v", err)
	}
}

// A tightened policy refuses the next grant and makes tokens carrying what it no
// longer allows inactive at introspection; the measured delay is logged.
func TestTightenedPolicy(t *testing.T) {
	const namespace = "tightened"
	p := policyNamespace(t, namespace, v1.ServiceKeyPolicySpec{Allowed: v1.AllowedPrivileges{Scopes: []string{"read", "write"}}})
	kf := readyKeyIn(t, namespace, "app", v1.ServiceKeySpec{Scopes: []string{"read", "write"}})
	token := accessToken(t, kf)
	caller := accessToken(t, readyKey(t, "policy-introspector", v1.ServiceKeySpec{Scopes: []string{tokenserver.DefaultIntrospectionScope + ":https://api.test"}}))
	if got := introspect(t, caller, token); !got.body.Active {
		t.Fatalf("before tightening: %s", got.raw)
	}

	p.Spec.Allowed.Scopes = []string{"read"}
	if err := k8s.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	took := refusedWithin(t, kf, "scope write")
	t.Logf("tightened policy: first refused grant %v after the update returned", took.Round(time.Millisecond))
	if code, _ := errorOf(t, grantScope(t, kf, "read")); code != "invalid_scope" {
		t.Errorf("a scope gap answers %q, want invalid_scope", code)
	}
	if got := introspect(t, caller, token); got.status != 200 || got.body.Active {
		t.Errorf("a token carrying a scope the policy stopped allowing is still active: %s", got.raw)
	}

	// A cap rather than a scope: unauthorized_client.
	p.Spec.Allowed.Scopes = []string{"read", "write"}
	p.Spec.MinKeySize = 4096
	if err := k8s.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a key-size gap refused as unauthorized_client", func() (bool, string) {
		r := grant(t, kf)
		code, desc := errorOf(t, r)
		return code == "unauthorized_client" && strings.HasSuffix(desc, "key size 2048 (considered: tightened)"), code + ": " + desc
	})

	// The tenant asks for 4096 bits: the new key works at once, and the old 2048-bit
	// key, Retiring for its grace period, is refused: it is below the policy's minimum.
	patchIn(t, namespace, "app", `{"spec":{"privateKey":{"size":4096}}}`)
	bigger := waitKeyFileIn(t, namespace, "app", func(sk *v1.ServiceKey) bool {
		return sk.Status.Keys[0].State == v1.KeyActive && sk.Status.Keys[0].KeyID != kf.KeyID
	})
	if r := grant(t, bigger); r.status != 200 {
		t.Fatalf("the 4096-bit key was refused: %s", r.body)
	}
	want := fmt.Sprintf("ServiceKey tightened/app is refused by policy: key %s has 2048 bits, below the minKeySize 4096 "+
		"of the policies that permit it; use the key the Secret holds now", kf.KeyID)
	if code, desc := errorOf(t, grant(t, kf)); code != "unauthorized_client" || desc != want {
		t.Errorf("the Retiring 2048-bit key: %s %q", code, desc)
	}

	// A lower TTL cap, met by the spec: tokens minted with the old one-hour lifetime
	// are inactive at introspection; a token of the new lifetime is active.
	long := accessToken(t, bigger)
	p.Spec.MaxAccessTokenTTL = &metav1.Duration{Duration: 30 * time.Minute}
	if err := k8s.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	patchIn(t, namespace, "app", `{"spec":{"accessTokenTTL":"30m"}}`)
	eventually(t, "grants under the 30m cap once the spec meets it", func() (bool, string) {
		code, desc := errorOf(t, grant(t, bigger))
		return code == "issued", code + ": " + desc
	})
	if got := introspect(t, caller, long); got.status != 200 || got.body.Active {
		t.Errorf("a one-hour token is active under a 30m cap: %d %v", got.status, got.body.Active)
	}
	if got := introspect(t, caller, accessToken(t, bigger)); !got.body.Active {
		t.Errorf("a 30m token under the 30m cap is inactive")
	}
}

func patchIn(t *testing.T, namespace, name, patch string) {
	t.Helper()
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if err := k8s.Patch(context.Background(), sk, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
}
