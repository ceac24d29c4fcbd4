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
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	gojwt "github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/oauth2/jwt"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

// readyKey creates a ServiceKey, waits until it is Ready and indexed by the token
// server, and returns its key file.
func readyKey(t *testing.T, name string, spec v1.ServiceKeySpec) keyutil.KeyFile {
	t.Helper()
	return readyKeyIn(t, ns, name, spec)
}

// readyKeyIn is readyKey in another namespace.
func readyKeyIn(t *testing.T, namespace, name string, spec v1.ServiceKeySpec) keyutil.KeyFile {
	t.Helper()
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Spec: spec}
	if err := k8s.Create(context.Background(), sk); err != nil {
		t.Fatal(err)
	}
	return waitKeyFileIn(t, namespace, name, func(*v1.ServiceKey) bool { return true })
}

// waitKeyFile waits until the ServiceKey satisfies cond, is Ready and its Active key
// is in the token server's index, and returns the key file from its Secret.
func waitKeyFile(t *testing.T, name string, cond func(*v1.ServiceKey) bool) keyutil.KeyFile {
	t.Helper()
	return waitKeyFileIn(t, ns, name, cond)
}

// waitKeyFileIn is waitKeyFile in another namespace.
func waitKeyFileIn(t *testing.T, namespace, name string, cond func(*v1.ServiceKey) bool) keyutil.KeyFile {
	t.Helper()
	var kf keyutil.KeyFile
	eventually(t, name+" Ready and indexed", func() (bool, string) {
		sk := &v1.ServiceKey{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, sk); err != nil {
			return false, err.Error()
		}
		if !meta.IsStatusConditionTrue(sk.Status.Conditions, v1.ConditionReady) || !cond(sk) {
			return false, fmt.Sprint(sk.Status.Conditions)
		}
		s := &corev1.Secret{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: sk.Status.SecretName}, s); err != nil {
			return false, err.Error()
		}
		var err error
		if kf, err = keyutil.ParseKeyFile(s.Data[v1.SecretKeyJSON]); err != nil {
			return false, err.Error()
		}
		rec, ok := server.Index.Record(kf.ClientID)
		return ok && slices.ContainsFunc(rec.Keys, func(k tokenserver.PublicKey) bool { return k.ID == kf.KeyID && k.Active }), "not indexed yet"
	})
	return kf
}

func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testenv.Eventually(t, what, cond)
}

// oauth2Config is golang.org/x/oauth2/jwt used as it is, filled from the key file.
func oauth2Config(kf keyutil.KeyFile, scopes ...string) *jwt.Config {
	return &jwt.Config{Email: kf.ClientID, PrivateKey: []byte(kf.PrivateKey), PrivateKeyID: kf.KeyID, TokenURL: kf.TokenURI, Scopes: scopes}
}

// jwks fetches the served key set.
func jwks(t *testing.T) jose.JSONWebKeySet {
	t.Helper()
	resp, err := http.Get(baseURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	return set
}

// verifyAccessToken checks the token's signature against the served JWKS and returns
// its claims and header.
func verifyAccessToken(t *testing.T, raw string) (*tokenserver.AccessTokenClaims, map[string]any) {
	t.Helper()
	set := jwks(t)
	claims := &tokenserver.AccessTokenClaims{}
	tok, err := gojwt.ParseWithClaims(raw, claims, func(tk *gojwt.Token) (any, error) {
		kid, _ := tk.Header["kid"].(string)
		keys := set.Key(kid)
		if len(keys) != 1 {
			return nil, fmt.Errorf("kid %q not in JWKS", kid)
		}
		return keys[0].Key, nil
	}, gojwt.WithValidMethods([]string{"ES256", "RS256"}), gojwt.WithIssuer("https://token.test"), gojwt.WithExpirationRequired())
	if err != nil || !tok.Valid {
		t.Fatalf("access token does not verify through the JWKS: %v", err)
	}
	return claims, tok.Header
}

func TestJWTBearerWithGolangOAuth2(t *testing.T) {
	kf := readyKey(t, "billing", v1.ServiceKeySpec{Scopes: []string{"invoices:read", "invoices:write"},
		AccessTokenTTL: &metav1.Duration{Duration: 15 * time.Minute}})
	tok, err := oauth2Config(kf, "invoices:read").TokenSource(context.Background()).Token()
	if err != nil {
		t.Fatalf("golang.org/x/oauth2/jwt could not get a token: %v", err)
	}
	if expiresIn, _ := tok.Extra("expires_in").(float64); tok.TokenType != "Bearer" || expiresIn != 900 {
		t.Errorf("token type %q, expires_in %v; want Bearer and 900 (the ServiceKey's accessTokenTTL)", tok.TokenType, tok.Extra("expires_in"))
	}
	claims, header := verifyAccessToken(t, tok.AccessToken)
	if header["typ"] != "at+jwt" {
		t.Errorf("typ %v, want at+jwt (RFC 9068 §2.1)", header["typ"])
	}
	want := map[string]string{"sub": "system:servicekey:apps:billing", "client_id": "apps/billing", "scope": "invoices:read", "aud": "https://api.test"}
	got := map[string]string{"sub": claims.Subject, "client_id": claims.ClientID, "scope": claims.Scope, "aud": strings.Join(claims.Audience, " ")}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("claim %s = %q, want %q", k, got[k], w)
		}
	}
	if claims.ID == "" || claims.IssuedAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) != 15*time.Minute {
		t.Errorf("jti %q iat %v exp %v", claims.ID, claims.IssuedAt, claims.ExpiresAt)
	}
}

func TestClientAssertionGrant(t *testing.T) {
	kf := readyKey(t, "reports", v1.ServiceKeySpec{Scopes: []string{"reports:read"}})
	assertion := signAssertion(t, kf, func(c gojwt.MapClaims) { c["sub"] = kf.ClientID })
	resp := postForm(t, url.Values{
		"grant_type": {"client_credentials"}, "client_assertion_type": {tokenserver.ClientAssertionJWTURN},
		"client_assertion": {assertion}, "scope": {"reports:read"},
	})
	if resp.status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	var tr tokenserver.TokenResponse
	if err := json.Unmarshal([]byte(resp.body), &tr); err != nil {
		t.Fatal(err)
	}
	claims, _ := verifyAccessToken(t, tr.AccessToken)
	if claims.ClientID != "apps/reports" || tr.Scope != "reports:read" || tr.ExpiresIn != 3600 {
		t.Errorf("client_id %q scope %q expires_in %d", claims.ClientID, tr.Scope, tr.ExpiresIn)
	}
	if resp.header.Get("Cache-Control") != "no-store" || resp.header.Get("Pragma") != "no-cache" {
		t.Errorf("cache headers %v", resp.header)
	}
}

func TestMetadata(t *testing.T) {
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		resp, err := http.Get(baseURL + path)
		if err != nil {
			t.Fatal(err)
		}
		var md tokenserver.Metadata
		err = json.NewDecoder(resp.Body).Decode(&md)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if md.Issuer != "https://token.test" || md.TokenEndpoint != tokenURL || md.IntrospectionEndpoint != "https://token.test/oauth2/introspect" || md.JWKSURI != "https://token.test/.well-known/jwks.json" ||
			!slices.Contains(md.GrantTypesSupported, tokenserver.GrantTypeJWTBearer) || !slices.Contains(md.GrantTypesSupported, tokenserver.GrantTypeRefreshToken) ||
			!slices.Contains(md.TokenEndpointAuthMethods, "private_key_jwt") || !slices.Contains(md.TokenEndpointAuthSigningAl, "RS256") {
			t.Errorf("%s: %+v", path, md)
		}
	}
}

type response struct {
	status int
	header http.Header
	body   string
}

func postForm(t *testing.T, form url.Values) response {
	t.Helper()
	return do(t, http.MethodPost, "application/x-www-form-urlencoded", form.Encode())
}

func do(t *testing.T, method, contentType, body string) response {
	t.Helper()
	return doAt(t, tokenURL, method, contentType, body)
}

// doAt sends a request to endpoint.
func doAt(t *testing.T, endpoint, method, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(b)}
}

// signAssertion signs a grant with the key file's key; mutate edits the claims and may
// set "kid" or "alg" through the reserved keys "_kid".
func signAssertion(t *testing.T, kf keyutil.KeyFile, mutate func(gojwt.MapClaims)) string {
	t.Helper()
	key, err := gojwt.ParseRSAPrivateKeyFromPEM([]byte(kf.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	s, err := signWith(key, kf, mutate)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signWith is signAssertion without a testing.T (for load goroutines): a fresh jti
// per call, from the time in nanoseconds.
func signWith(key *rsa.PrivateKey, kf keyutil.KeyFile, mutate func(gojwt.MapClaims)) (string, error) {
	now := time.Now()
	c := gojwt.MapClaims{"iss": kf.ClientID, "aud": kf.TokenURI, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"jti": fmt.Sprintf("jti-%d", now.UnixNano())}
	if mutate != nil {
		mutate(c)
	}
	kid := kf.KeyID
	if k, ok := c["_kid"]; ok {
		kid, _ = k.(string)
		delete(c, "_kid")
	}
	header := map[string]any{}
	for name, v := range c { // "_h_<name>": a JWS header parameter, not a claim
		if h, ok := strings.CutPrefix(name, "_h_"); ok {
			header[h] = v
			delete(c, name)
		}
	}
	tok := gojwt.NewWithClaims(gojwt.SigningMethodRS256, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	for name, v := range header {
		tok.Header[name] = v
	}
	return tok.SignedString(key)
}

func TestLastUsedTimeAndMetrics(t *testing.T) {
	kf := readyKey(t, "used", v1.ServiceKeySpec{})
	before := metav1.Now().Rfc3339Copy() // lastUsedTime has second precision
	if r := grant(t, kf); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	eventually(t, "status.lastUsedTime", func() (bool, string) {
		sk := &v1.ServiceKey{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "used"}, sk); err != nil {
			return false, err.Error()
		}
		return sk.Status.LastUsedTime != nil && !sk.Status.LastUsedTime.Before(&before), fmt.Sprint(sk.Status.LastUsedTime)
	})
	// One refusal of this test's own, so the check does not depend on other tests.
	refused, err := http.PostForm(baseURL+"/oauth2/token", url.Values{"grant_type": {"password"}})
	if err != nil {
		t.Fatal(err)
	}
	_ = refused.Body.Close()
	resp, err := http.Get("http://" + server.MetricsAddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{
		`servicekey_token_requests_total{grant_type="jwt-bearer",outcome="issued"}`,
		`servicekey_token_requests_total{grant_type="other",outcome="unsupported_grant_type"}`,
		`servicekey_token_request_duration_seconds_bucket{grant_type="jwt-bearer"`,
		`servicekey_token_keys_indexed`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// clientSecretOf waits until the ServiceKey's Secret holds a client secret that the
// suite's token server knows, and returns it.
func clientSecretOf(t *testing.T, name string) string {
	t.Helper()
	var secret string
	eventually(t, "client secret in the Secret and the index", func() (bool, string) {
		s := &corev1.Secret{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
			return false, err.Error()
		}
		secret = string(s.Data[v1.SecretKeyClientSecret])
		issued.add(secret)
		rec, ok := server.Index.Record(ns + "/" + name)
		return secret != "" && ok && keyutil.ClientSecretMatches(secret, rec.ClientSecretHash), "not yet"
	})
	return secret
}

func TestClientSecretWithGolangOAuth2(t *testing.T) {
	readyKey(t, "secret-client", v1.ServiceKeySpec{Scopes: []string{"metrics:read"}, ClientSecret: &v1.ClientSecretSpec{Enabled: true}})
	secret := clientSecretOf(t, "secret-client")
	for name, style := range map[string]oauth2.AuthStyle{"HTTP Basic": oauth2.AuthStyleInHeader, "form": oauth2.AuthStyleInParams} {
		t.Run(name, func(t *testing.T) {
			cc := clientcredentials.Config{ClientID: "apps/secret-client", ClientSecret: secret, TokenURL: tokenURL,
				Scopes: []string{"metrics:read"}, AuthStyle: style}
			tok, err := cc.Token(context.Background())
			if err != nil {
				t.Fatalf("golang.org/x/oauth2/clientcredentials: %v", err)
			}
			claims, _ := verifyAccessToken(t, tok.AccessToken)
			if claims.ClientID != "apps/secret-client" || claims.Scope != "metrics:read" {
				t.Errorf("claims %+v", claims)
			}
		})
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, tokenURL, strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape("apps/secret-client"), "wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("wrong secret: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// TestLeastPrivilege: with the token server's permissions, its signing Secret is
// readable and no other Secret is — not a key Secret, not one in its own namespace.
func TestLeastPrivilege(t *testing.T) {
	readyKey(t, "privilege", v1.ServiceKeySpec{})
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "neighbour", Namespace: systemNS}, StringData: map[string]string{"a": "b"}}
	if err := k8s.Create(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		key       client.ObjectKey
		forbidden bool
	}{
		"its signing Secret":              {client.ObjectKey{Namespace: systemNS, Name: signingKey}, false},
		"a ServiceKey's Secret":           {client.ObjectKey{Namespace: ns, Name: "privilege"}, true},
		"another Secret in its namespace": {client.ObjectKey{Namespace: systemNS, Name: "neighbour"}, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := asServer.Get(context.Background(), tc.key, &corev1.Secret{})
			if got := apierrors.IsForbidden(err); got != tc.forbidden || (!tc.forbidden && err != nil) {
				t.Errorf("get %s: %v", tc.key, err)
			}
		})
	}
	if err := asServer.List(context.Background(), &corev1.SecretList{}, client.InNamespace(ns)); !apierrors.IsForbidden(err) {
		t.Errorf("listing Secrets: %v, want Forbidden", err)
	}
}
