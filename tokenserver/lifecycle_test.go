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
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

// grant exchanges a fresh assertion signed with kf and returns status and body.
func grant(t *testing.T, kf keyutil.KeyFile) response {
	t.Helper()
	return postForm(t, url.Values{"grant_type": {tokenserver.GrantTypeJWTBearer}, "assertion": {signAssertion(t, kf, nil)}})
}

// refusedWithin polls grants until one is refused and returns how long that took.
func refusedWithin(t *testing.T, kf keyutil.KeyFile, want string) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, "grants of "+kf.ClientID+" refused", func() (bool, string) {
		r := grant(t, kf)
		if r.status == 200 {
			return false, "issued" // the body holds an access token: never in test output
		}
		return r.status == 400 && strings.Contains(r.body, want), r.body
	})
	return time.Since(start)
}

func TestRevocationByDeleteAndSuspend(t *testing.T) {
	cases := map[string]struct {
		revoke func(t *testing.T, name string)
		want   string
	}{
		"suspend": {func(t *testing.T, name string) {
			patchKey(t, name, func(sk *v1.ServiceKey) { sk.Spec.Suspended = true })
		}, "is suspended"},
		"delete": {func(t *testing.T, name string) {
			sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
			if err := k8s.Delete(context.Background(), sk); err != nil {
				t.Fatal(err)
			}
		}, tokenserver.GenericAssertionRefusal},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			kf := readyKey(t, "revoke-"+name, v1.ServiceKeySpec{})
			if r := grant(t, kf); r.status != 200 {
				t.Fatalf("before revocation: %d %s", r.status, r.body)
			}
			tc.revoke(t, "revoke-"+name)
			took := refusedWithin(t, kf, tc.want)
			t.Logf("%s: grants refused %v after the API call returned", name, took.Round(time.Millisecond))
		})
	}
}

func TestServiceKeyRotationGrace(t *testing.T) {
	// The grace period leaves room for a slow, shared CI machine between the rotation
	// and the first check that the old key still works.
	old := readyKey(t, "rotating", v1.ServiceKeySpec{Rotation: v1.RotationSpec{GracePeriod: &metav1.Duration{Duration: 8 * time.Second}}})
	patchKey(t, "rotating", func(sk *v1.ServiceKey) { sk.Annotations = map[string]string{v1.AnnotationRotate: "now"} })
	current := waitKeyFile(t, "rotating", func(sk *v1.ServiceKey) bool {
		return sk.Status.Keys[0].State == v1.KeyActive && sk.Status.Keys[0].KeyID != old.KeyID
	})
	if r := grant(t, old); r.status != 200 {
		t.Fatalf("the Retiring key was refused within its grace period: %s", r.body)
	}
	if r := grant(t, current); r.status != 200 {
		t.Fatalf("the new key was refused: %s", r.body)
	}
	took := refusedWithin(t, old, tokenserver.GenericAssertionRefusal)
	t.Logf("Retiring key refused %v after rotation (grace period 8s)", took.Round(time.Millisecond))
	if r := grant(t, current); r.status != 200 {
		t.Fatalf("the new key stopped working: %s", r.body)
	}
}

func TestSigningKeyRotationKeepsTokensVerifiable(t *testing.T) {
	kf := readyKey(t, "signing-rotation", v1.ServiceKeySpec{})
	before := accessToken(t, kf)
	_, oldHeader := verifyAccessToken(t, before)

	// Rotate: a new current key, the old one kept as previous.
	if err := rotateSigningKey(); err != nil {
		t.Fatal(err)
	}
	var after string
	eventually(t, "the server to sign with the new key", func() (bool, string) {
		after = accessToken(t, kf)
		_, h := verifyAccessToken(t, after)
		return h["kid"] != oldHeader["kid"], "still the old kid"
	})
	// The token signed before the rotation still verifies through the JWKS.
	verifyAccessToken(t, before)
	if n := len(jwks(t).Keys); n != 2 {
		t.Errorf("JWKS has %d keys, want current and previous", n)
	}
}

// TestSigningSecretDeletedStopsSigning: deleting the signing-key Secret (the runbook
// for a compromised signing key) makes the server stop signing with its keys at once:
// grants are answered 503 with Retry-After, /readyz stays 200 and says why, the JWKS no longer
// serves the deleted keys, and the next Secret's key signs.
func TestSigningSecretDeletedStopsSigning(t *testing.T) {
	ctx := context.Background()
	kf := readyKey(t, "signing-deleted", v1.ServiceKeySpec{})
	_, oldHeader := verifyAccessToken(t, accessToken(t, kf))
	old, err := getSigningSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // the other tests need a signing key, whatever happened here
		if _, err := getSigningSecret(ctx); apierrors.IsNotFound(err) {
			_ = writeSigningSecret(ctx, newSigningPEM())
		}
	})
	if err := k8s.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	eventually(t, "grants answered 503 after the delete", func() (bool, string) {
		r := grant(t, kf)
		if r.status == 200 {
			return false, "issued" // the body holds an access token: never in test output
		}
		return r.status == 503 && strings.Contains(r.body, tokenserver.CodeTemporarilyUnavailable) && r.header.Get("Retry-After") != "", r.body
	})
	if code, body := testenv.HTTPGet(baseURL + "/readyz"); code != 200 || !strings.Contains(body, "deleted") {
		t.Errorf("/readyz after the delete: %d %q", code, body)
	}
	if code, _ := testenv.HTTPGet(baseURL + "/.well-known/jwks.json"); code != 503 {
		t.Errorf("JWKS after the delete: %d, want 503 (no deleted key served)", code)
	}

	if err := writeSigningSecret(ctx, newSigningPEM()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "grants issued with the new key", func() (bool, string) {
		r := grant(t, kf)
		return r.status == 200, r.body
	})
	if _, h := verifyAccessToken(t, accessToken(t, kf)); h["kid"] == oldHeader["kid"] {
		t.Error("a token was signed with the deleted key")
	}
	set := jwks(t)
	if kid, _ := oldHeader["kid"].(string); len(set.Key(kid)) != 0 {
		t.Error("the JWKS still publishes the deleted key")
	}
}

func accessToken(t *testing.T, kf keyutil.KeyFile) string {
	t.Helper()
	r := grant(t, kf)
	var tr tokenserver.TokenResponse
	if r.status != 200 || json.Unmarshal([]byte(r.body), &tr) != nil {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	return tr.AccessToken
}

// rotateSigningKey moves current to previous and installs a new current key, as the
// signing-key rotation does.
func rotateSigningKey() error {
	ctx := context.Background()
	s, err := getSigningSecret(ctx)
	if err != nil {
		return err
	}
	return writeSigningSecret(ctx, newSigningPEM(), s.Data[tokenserver.SigningCurrent])
}
