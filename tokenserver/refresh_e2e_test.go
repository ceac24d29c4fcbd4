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
	"encoding/base64"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	skclient "github.com/servicekey-operator/servicekey-operator/client"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

// refreshSpec is a ServiceKey with refresh tokens, two scopes and a short grace period.
func refreshSpec() v1.ServiceKeySpec {
	return v1.ServiceKeySpec{Scopes: []string{"read", "write"}, RefreshTokens: &v1.RefreshTokensSpec{TTL: metav1.Duration{Duration: time.Hour}},
		Rotation: v1.RotationSpec{GracePeriod: &metav1.Duration{Duration: 8 * time.Second}}}
}

// expectRefused checks a refusal's status, error code and description.
func expectRefused(t *testing.T, what string, got response, status int, code, part string) {
	t.Helper()
	if got.status != status || !strings.Contains(got.body, `"`+code+`"`) || !strings.Contains(got.body, part) { // part may be ""
		t.Fatalf("%s: %d %s; want %d %s (%s)", what, got.status, got.body, status, code, part)
	}
}

// TestRefreshTokens runs a refresh-token family's life on two replicas sharing Redis
// (each step alternates replicas) and on one replica in memory: issue, narrow,
// a refused widening that changes nothing, reuse revoking the family, and death with
// the key by suspension and by rotation past its grace period.
func TestRefreshTokens(t *testing.T) {
	r := testenv.StartRedis(t)
	for name, url := range map[string]string{"redis": r.URL(), "memory": ""} {
		t.Run(name, func(t *testing.T) {
			a := startReplica(t, url, 0, 0)
			b := a
			if url != "" {
				b = startReplica(t, url, 0, 0)
			}
			key := "refresh-" + name
			kf := readyKey(t, key, refreshSpec())
			grantForm := bearerForm(signAssertion(t, kf, nil))
			grantForm.Set("scope", "read")
			first := reply(t, a.post(t, grantForm))
			if first.RefreshToken == "" || first.Scope != "read" {
				t.Fatalf("a grant of a key with refresh tokens: scope %q, refresh token given %v", first.Scope, first.RefreshToken != "")
			}
			narrowed := reply(t, b.post(t, refreshForm(first.RefreshToken, "read")))
			claims, _ := verifyAccessToken(t, narrowed.AccessToken)
			if claims.Scope != "read" || claims.KeyID != kf.KeyID || claims.ClientID != kf.ClientID || narrowed.RefreshToken == first.RefreshToken {
				t.Fatalf("refreshed with scope read: claims %+v, rotated %v", claims, narrowed.RefreshToken != first.RefreshToken)
			}
			// write is the key's but not the family's: refused, and the token stays valid.
			expectRefused(t, "a wider scope", a.post(t, refreshForm(narrowed.RefreshToken, "read write")), 400, "invalid_scope", "only narrow")
			// admin is not even the key's: refused as an unknown token would be (no probing).
			expectRefused(t, "a scope beyond the key", b.post(t, refreshForm(narrowed.RefreshToken, "admin")), 400, "invalid_grant", "not valid")
			whole := reply(t, b.post(t, refreshForm(narrowed.RefreshToken, "")))
			if whole.Scope != "read" {
				t.Fatalf("after the refused widening, the family's scope: %q", whole.Scope)
			}
			expectRefused(t, "a reuse", a.post(t, refreshForm(narrowed.RefreshToken, "")), 400, "invalid_grant", "already used")
			expectRefused(t, "the family after a reuse", b.post(t, refreshForm(whole.RefreshToken, "")), 400, "invalid_grant", "not valid")

			diesWithSuspension(t, a, b, key, kf)
			diesWithRotation(t, a, b, key, kf)
		})
	}
}

// diesWithSuspension: a suspension ends the key's refresh tokens, used or not while
// the key is suspended: they stay dead once it is resumed.
func diesWithSuspension(t *testing.T, a, b replica, key string, kf keyutil.KeyFile) {
	t.Helper()
	unused := reply(t, a.post(t, bearerForm(signAssertion(t, kf, nil)))).RefreshToken
	used := reply(t, b.post(t, bearerForm(signAssertion(t, kf, nil)))).RefreshToken
	patchKey(t, key, func(sk *v1.ServiceKey) { sk.Spec.Suspended = true })
	for _, r := range []replica{a, b} {
		testenv.Eventually(t, "grants refused while suspended", func() (bool, string) {
			got := r.post(t, bearerForm(signAssertion(t, kf, nil)))
			return got.status == 400 && strings.Contains(got.body, "is suspended"), got.body
		})
	}
	// The caller holds the family's current token, so it is told why the family ends.
	expectRefused(t, "a refresh while suspended", a.post(t, refreshForm(used, "")), 400, "invalid_grant", "is suspended; its refresh tokens are ended")
	patchKey(t, key, func(sk *v1.ServiceKey) { sk.Spec.Suspended = false })
	for _, r := range []replica{a, b} {
		testenv.Eventually(t, "grants again after resuming", func() (bool, string) {
			got := r.post(t, bearerForm(signAssertion(t, kf, nil)))
			return got.status == 200, got.body
		})
	}
	expectRefused(t, "a refresh token used while suspended, after resuming", b.post(t, refreshForm(used, "")), 400, "invalid_grant", "not valid")
	// The spec changed twice since the family started: a new generation ends it.
	expectRefused(t, "a refresh token unused while suspended, after resuming", b.post(t, refreshForm(unused, "")), 400, "invalid_grant", "no longer current")
}

// diesWithRotation: a family keeps working within the rotated key's grace period and
// is refused once the key that got it is retired.
func diesWithRotation(t *testing.T, a, b replica, key string, old keyutil.KeyFile) {
	t.Helper()
	rt := reply(t, a.post(t, bearerForm(signAssertion(t, old, nil)))).RefreshToken
	patchKey(t, key, func(sk *v1.ServiceKey) { sk.Annotations = map[string]string{v1.AnnotationRotate: "now"} })
	current := waitKeyFile(t, key, func(sk *v1.ServiceKey) bool {
		return sk.Status.Keys[0].State == v1.KeyActive && sk.Status.Keys[0].KeyID != old.KeyID
	})
	if got := reply(t, b.post(t, bearerForm(signAssertion(t, current, nil)))); got.RefreshToken == "" {
		t.Fatal("the new key's grant has no refresh token")
	}
	refreshed := 0
	testenv.Eventually(t, "the old key's family refused after its grace period", func() (bool, string) {
		got := []replica{a, b}[refreshed%2].post(t, refreshForm(rt, ""))
		if got.status == 200 {
			rt = reply(t, got).RefreshToken
			refreshed++
			return false, "still refreshed"
		}
		return got.status == 400 && strings.Contains(got.body, "no longer current"), got.body
	})
	if refreshed == 0 {
		t.Error("the family was never refreshed within the grace period")
	}
}

// TestRefreshTokensOnlyWhenAsked: a key without spec.refreshTokens gets none, and a
// refresh token of a key whose refresh tokens are turned off is refused.
func TestRefreshTokensOnlyWhenAsked(t *testing.T) {
	kf := readyKey(t, "no-refresh", v1.ServiceKeySpec{})
	got := reply(t, postForm(t, bearerForm(signAssertion(t, kf, nil))))
	if got.RefreshToken != "" {
		t.Error("a key without spec.refreshTokens got a refresh token")
	}
	kf = readyKey(t, "refresh-off", refreshSpec())
	rt := reply(t, postForm(t, bearerForm(signAssertion(t, kf, nil)))).RefreshToken
	patchKey(t, "refresh-off", func(sk *v1.ServiceKey) { sk.Spec.RefreshTokens = nil })
	testenv.Eventually(t, "refresh refused once turned off", func() (bool, string) {
		got := postForm(t, refreshForm(rt, ""))
		if got.status == 200 {
			rt = reply(t, got).RefreshToken
			return false, "issued"
		}
		return got.status == 400 && strings.Contains(got.body, "refresh tokens are not enabled"), got.body
	})
}

// TestRefreshWithClientSecret: a key with a client secret must authenticate with it
// to refresh; its family is bound to that secret.
func TestRefreshWithClientSecret(t *testing.T) {
	spec := refreshSpec()
	spec.ClientSecret = &v1.ClientSecretSpec{Enabled: true}
	readyKey(t, "refresh-secret", spec)
	secret := clientSecretOf(t, "refresh-secret")
	cc := postForm(t, map[string][]string{"grant_type": {"client_credentials"}, "client_id": {"apps/refresh-secret"}, "client_secret": {secret}})
	rt := reply(t, cc).RefreshToken
	if rt == "" {
		t.Fatal("no refresh token for a client-secret grant")
	}
	expectRefused(t, "a refresh without the secret", postForm(t, refreshForm(rt, "")), http.StatusUnauthorized, "invalid_client", "client authentication failed")
	form := refreshForm(rt, "")
	form.Set("client_id", "apps/refresh-secret")
	form.Set("client_secret", secret)
	if got := reply(t, postForm(t, form)); got.RefreshToken == "" || got.RefreshToken == rt {
		t.Error("a refresh with the secret was not rotated")
	}
}

// countedTokenSource is a TokenSource of kf on a fake clock, with its grants recorded.
func countedTokenSource(t *testing.T, kf keyutil.KeyFile) (*skclient.TokenSource, *countingTransport, *clocktesting.FakeClock) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.json")
	writeKeyFile(t, path, kf)
	clk := clocktesting.NewFakeClock(time.Now())
	rt := &countingTransport{}
	src, err := skclient.NewTokenSource(skclient.Options{KeyFile: path, HTTPClient: &http.Client{Transport: rt}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return src, rt, clk
}

// TestTokenSourceUsesRefreshTokens: with spec.refreshTokens the TokenSource refreshes
// instead of signing a grant, and falls back to a new grant when the refresh token is
// refused (here: ended by a suspension).
func TestTokenSourceUsesRefreshTokens(t *testing.T) {
	kf := readyKey(t, "kit-refresh", v1.ServiceKeySpec{RefreshTokens: &v1.RefreshTokensSpec{TTL: metav1.Duration{Duration: time.Hour}}})
	src, rt, clk := countedTokenSource(t, kf)
	next := func() {
		t.Helper()
		tok, err := src.Token()
		if err != nil {
			t.Fatal(err)
		}
		clk.SetTime(tok.Expiry) // the next call needs a new token
	}
	next()
	next()
	next()
	patchKey(t, "kit-refresh", func(sk *v1.ServiceKey) { sk.Spec.Suspended = true })
	refusedWithin(t, kf, "is suspended")
	patchKey(t, "kit-refresh", func(sk *v1.ServiceKey) { sk.Spec.Suspended = false })
	eventually(t, "grants after resuming", func() (bool, string) {
		r := grant(t, kf)
		return r.status == 200, r.body
	})
	next()
	next()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	bearer, refresh := tokenserver.GrantTypeJWTBearer, tokenserver.GrantTypeRefreshToken
	want := []string{bearer, refresh, refresh, refresh, bearer, refresh}
	if !slices.Equal(rt.grants, want) {
		t.Errorf("grant types sent: %q; want %q", rt.grants, want)
	}
}

// TestTokenSourceWithoutTheClientSecret: a key with a client secret must authenticate
// to refresh; the TokenSource, which holds no secret, signs grants after the first refusal.
func TestTokenSourceWithoutTheClientSecret(t *testing.T) {
	kf := readyKey(t, "kit-refresh-secret", v1.ServiceKeySpec{RefreshTokens: &v1.RefreshTokensSpec{TTL: metav1.Duration{Duration: time.Hour}},
		ClientSecret: &v1.ClientSecretSpec{Enabled: true}})
	clientSecretOf(t, "kit-refresh-secret")
	src, rt, clk := countedTokenSource(t, kf)
	for range 3 {
		tok, err := src.Token()
		if err != nil {
			t.Fatal(err)
		}
		clk.SetTime(tok.Expiry)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	bearer := tokenserver.GrantTypeJWTBearer
	if want := []string{bearer, tokenserver.GrantTypeRefreshToken, bearer, bearer}; !slices.Equal(rt.grants, want) {
		t.Errorf("grant types sent: %q; want %q", rt.grants, want)
	}
}

// TestRefreshDoesNotTellClientIDs: a forged refresh token naming a ServiceKey that
// exists (with refresh tokens, suspended, or without them) is answered exactly as one
// naming no ServiceKey, whatever else the request carries.
func TestRefreshDoesNotTellClientIDs(t *testing.T) {
	readyKey(t, "refresh-probed", refreshSpec())
	readyKey(t, "refresh-probed-off", v1.ServiceKeySpec{Scopes: []string{"read"}})
	forged := func(clientID string) string {
		enc := base64.RawURLEncoding
		return enc.EncodeToString([]byte(clientID)) + "." + enc.EncodeToString(make([]byte, 16)) + "." + enc.EncodeToString(make([]byte, 32))
	}
	requests := map[string]func(clientID string) url.Values{
		"token alone":  func(id string) url.Values { return refreshForm(forged(id), "") },
		"with a scope": func(id string) url.Values { return refreshForm(forged(id), "read") },
		"with a secret": func(id string) url.Values {
			f := refreshForm(forged(id), "")
			f.Set("client_secret", "guess")
			return f
		},
		"with client_id": func(id string) url.Values { f := refreshForm(forged(id), ""); f.Set("client_id", id); return f },
	}
	for name, form := range requests {
		t.Run(name, func(t *testing.T) {
			unknown := postForm(t, form(ns+"/no-such-key"))
			if unknown.status < 400 {
				t.Fatalf("a forged token was accepted: %d", unknown.status)
			}
			for _, id := range []string{ns + "/refresh-probed", ns + "/refresh-probed-off"} {
				if got := postForm(t, form(id)); got.status != unknown.status || got.body != unknown.body {
					t.Errorf("%s: %d %s; an unknown client_id gets %d %s", id, got.status, got.body, unknown.status, unknown.body)
				}
			}
		})
	}
}
