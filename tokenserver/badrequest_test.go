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
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

// badKeys are the ServiceKeys the bad-request table signs with.
type badKeys struct {
	ok, suspended, expired, cidr keyutil.KeyFile
	retired                      keyutil.KeyFile // a key rotated away, past its grace period
	stranger                     *rsa.PrivateKey
}

func prepareBadKeys(t *testing.T) badKeys {
	t.Helper()
	var k badKeys
	k.ok = readyKey(t, "table", v1.ServiceKeySpec{Scopes: []string{"a", "b"}})
	k.suspended = readyKey(t, "table-suspended", v1.ServiceKeySpec{})
	patchKey(t, "table-suspended", func(sk *v1.ServiceKey) { sk.Spec.Suspended = true })
	k.cidr = readyKey(t, "table-cidr", v1.ServiceKeySpec{AllowedCIDRs: []string{"10.0.0.0/8"}})
	at := metav1.NewTime(time.Now().Add(3 * time.Second))
	k.expired = readyKey(t, "table-expired", v1.ServiceKeySpec{ExpiresAt: &at})
	k.retired = readyKey(t, "table-retire", v1.ServiceKeySpec{Rotation: v1.RotationSpec{GracePeriod: &metav1.Duration{Duration: time.Second}}})
	patchKey(t, "table-retire", func(sk *v1.ServiceKey) { sk.Annotations = map[string]string{v1.AnnotationRotate: "1"} })
	// Wait for the rotation itself: with a 1s grace the Retiring key may already be gone.
	waitKeyFile(t, "table-retire", func(sk *v1.ServiceKey) bool {
		return slices.ContainsFunc(sk.Status.Keys, func(k2 v1.PublicKey) bool { return k2.State == v1.KeyActive && k2.KeyID != k.retired.KeyID })
	})
	k.stranger, _ = rsa.GenerateKey(rand.Reader, 2048)
	eventually(t, "suspension, expiry and grace to take effect", func() (bool, string) {
		s, _ := server.Index.Record(k.suspended.ClientID)
		r, _ := server.Index.Record(k.retired.ClientID)
		retiredGone := r != nil && !slices.ContainsFunc(r.Keys, func(pk tokenserver.PublicKey) bool {
			return pk.ID == k.retired.KeyID && (pk.NotAfter == nil || time.Now().Before(*pk.NotAfter))
		})
		return s != nil && s.Suspended && time.Now().After(at.Add(time.Second)) && retiredGone, ""
	})
	return k
}

func patchKey(t *testing.T, name string, change func(*v1.ServiceKey)) {
	t.Helper()
	if err := testenv.UpdateServiceKey(context.Background(), k8s, client.ObjectKey{Namespace: ns, Name: name}, change); err != nil {
		t.Fatal(err)
	}
}

func bearer(assertion string, extra ...string) string {
	f := url.Values{"grant_type": {tokenserver.GrantTypeJWTBearer}, "assertion": {assertion}}
	for i := 0; i+1 < len(extra); i += 2 {
		f.Add(extra[i], extra[i+1])
	}
	return f.Encode()
}

func clientCreds(assertion string, extra ...string) string {
	f := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {tokenserver.ClientAssertionJWTURN}, "client_assertion": {assertion}}
	for i := 0; i+1 < len(extra); i += 2 {
		f.Set(extra[i], extra[i+1])
	}
	return f.Encode()
}

const form = "application/x-www-form-urlencoded"

type badCase struct {
	method, contentType, body string
	status                    int
	code                      string
}

func badCases(t *testing.T, k badKeys) map[string]badCase {
	sign := func(kf keyutil.KeyFile, m func(gojwt.MapClaims)) string { return signAssertion(t, kf, m) }
	set := func(key string, v any) func(gojwt.MapClaims) { return func(c gojwt.MapClaims) { c[key] = v } }
	del := func(key string) func(gojwt.MapClaims) { return func(c gojwt.MapClaims) { delete(c, key) } }
	now := time.Now()
	pubDER, _ := x509.MarshalPKIXPublicKey(mustKey(t, k.ok).Public())
	hs := gojwt.NewWithClaims(gojwt.SigningMethodHS256, gojwt.MapClaims{"iss": k.ok.ClientID, "aud": k.ok.TokenURI, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
	hs.Header["kid"] = k.ok.KeyID
	hsSigned, _ := hs.SignedString(pubDER)
	none := gojwt.NewWithClaims(gojwt.SigningMethodNone, gojwt.MapClaims{"iss": k.ok.ClientID, "aud": k.ok.TokenURI, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
	noneSigned, _ := none.SignedString(gojwt.UnsafeAllowNoneSignatureType)
	strangerPEM, _ := keyutil.EncodePrivateKey(k.stranger, v1.PKCS1)
	stranger := k.ok
	stranger.PrivateKey, stranger.KeyID = string(strangerPEM), ""
	good := sign(k.ok, nil)
	tampered := good[:len(good)-4] + "AAAA"
	ig, ic, ir := tokenserver.CodeInvalidGrant, tokenserver.CodeInvalidClient, tokenserver.CodeInvalidRequest
	p := http.MethodPost
	return map[string]badCase{
		"GET":                                {http.MethodGet, "", "", 405, ir},
		"PUT":                                {http.MethodPut, form, bearer(good), 405, ir},
		"JSON body":                          {p, "application/json", `{"grant_type":"client_credentials"}`, 400, ir},
		"no content type":                    {p, "", bearer(good), 400, ir},
		"empty body":                         {p, form, "", 400, ir},
		"oversized body":                     {p, form, bearer(strings.Repeat("x", 100<<10)), 413, ir},
		"malformed form":                     {p, form, "grant_type=%zz", 400, ir},
		"no grant_type":                      {p, form, "assertion=" + good, 400, ir},
		"grant_type password":                {p, form, "grant_type=password&username=a&password=b", 400, tokenserver.CodeUnsupportedGrantType},
		"grant_type authorization_code":      {p, form, "grant_type=authorization_code&code=x", 400, tokenserver.CodeUnsupportedGrantType},
		"jwt-bearer without assertion":       {p, form, "grant_type=" + url.QueryEscape(tokenserver.GrantTypeJWTBearer), 400, ir},
		"grant_type twice":                   {p, form, bearer(good) + "&grant_type=client_credentials", 400, ir},
		"assertion twice":                    {p, form, bearer(good) + "&assertion=" + good, 400, ir},
		"not a JWT":                          {p, form, bearer("not.a.jwt"), 400, ig},
		"alg none":                           {p, form, bearer(noneSigned), 400, ig},
		"HS256 keyed with the public key":    {p, form, bearer(hsSigned), 400, ig},
		"unknown kid":                        {p, form, bearer(sign(k.ok, set("_kid", "no-such-key"))), 400, ig},
		"kid of another ServiceKey":          {p, form, bearer(sign(k.ok, set("_kid", k.cidr.KeyID))), 400, ig},
		"unknown iss":                        {p, form, bearer(sign(k.ok, set("iss", "apps/nobody"))), 400, ig},
		"no iss":                             {p, form, bearer(sign(k.ok, del("iss"))), 400, ig},
		"iss of another ServiceKey":          {p, form, bearer(sign(k.ok, set("iss", k.cidr.ClientID))), 400, ig},
		"very long iss":                      {p, form, bearer(sign(k.ok, set("iss", strings.Repeat("x", 2000)))), 400, ig},
		"sub mismatch":                       {p, form, bearer(sign(k.ok, set("sub", "system:masters"))), 400, ig},
		"no aud":                             {p, form, bearer(sign(k.ok, del("aud"))), 400, ig},
		"wrong aud":                          {p, form, bearer(sign(k.ok, set("aud", "https://evil.test/token"))), 400, ig},
		"no exp":                             {p, form, bearer(sign(k.ok, del("exp"))), 400, ig},
		"expired assertion":                  {p, form, bearer(sign(k.ok, set("exp", now.Add(-5*time.Minute).Unix()))), 400, ig},
		"exp too far":                        {p, form, bearer(sign(k.ok, set("exp", now.Add(3*time.Hour).Unix()))), 400, ig},
		"no iat":                             {p, form, bearer(sign(k.ok, del("iat"))), 400, ig},
		"iat in the future":                  {p, form, bearer(sign(k.ok, set("iat", now.Add(10*time.Minute).Unix()))), 400, ig},
		"nbf in the future":                  {p, form, bearer(sign(k.ok, set("nbf", now.Add(10*time.Minute).Unix()))), 400, ig},
		"signed by a stranger, no kid":       {p, form, bearer(sign(stranger, nil)), 400, ig},
		"tampered signature":                 {p, form, bearer(tampered), 400, ig},
		"scope not allowed":                  {p, form, bearer(sign(k.ok, nil), "scope", "admin"), 400, tokenserver.CodeInvalidScope},
		"scope partly allowed":               {p, form, bearer(sign(k.ok, nil), "scope", "a admin"), 400, tokenserver.CodeInvalidScope},
		"scope claim not allowed":            {p, form, bearer(sign(k.ok, set("scope", "root"))), 400, tokenserver.CodeInvalidScope},
		"suspended key":                      {p, form, bearer(sign(k.suspended, nil)), 400, ig},
		"expired key":                        {p, form, bearer(sign(k.expired, nil)), 400, ig},
		"retired key":                        {p, form, bearer(sign(k.retired, nil)), 400, ig},
		"source address not allowed":         {p, form, bearer(sign(k.cidr, nil)), 400, tokenserver.CodeUnauthorizedClient},
		"client_credentials, no assertion":   {p, form, "grant_type=client_credentials", 401, ic},
		"client_credentials, HTTP-style id":  {p, form, "grant_type=client_credentials&client_id=apps%2Ftable&client_secret=x", 401, ic},
		"client assertion type wrong":        {p, form, clientCreds(sign(k.ok, set("sub", k.ok.ClientID)), "client_assertion_type", "urn:other"), 401, ic},
		"client assertion sub not client":    {p, form, clientCreds(sign(k.ok, nil)), 401, ic},
		"client assertion bad signature":     {p, form, clientCreds(sign(stranger, set("sub", k.ok.ClientID))), 401, ic},
		"client assertion client_id differs": {p, form, clientCreds(sign(k.ok, set("sub", k.ok.ClientID)), "client_id", "apps/other"), 401, ic},
		"two client auth methods":            {p, form, clientCreds(sign(k.ok, set("sub", k.ok.ClientID)), "client_secret", "x"), 400, ir},
		"jti over 256 bytes":                 {p, form, bearer(sign(k.ok, set("jti", strings.Repeat("j", 257)))), 400, ig},
		"typ at+jwt (an access token)":       {p, form, bearer(sign(k.ok, set("_h_typ", "at+jwt"))), 400, ig},
		"jku header":                         {p, form, bearer(sign(k.ok, set("_h_jku", "https://evil.test/jwks"))), 400, ig},
		"embedded jwk header":                {p, form, bearer(sign(k.ok, set("_h_jwk", map[string]any{"kty": "RSA"}))), 400, ig},
		"x5c header":                         {p, form, bearer(sign(k.ok, set("_h_x5c", []string{"MIIB"}))), 400, ig},
		"crit header":                        {p, form, bearer(sign(k.ok, set("_h_crit", []string{"exp"}))), 400, ig},
		"cty header (nested JWT)":            {p, form, bearer(sign(k.ok, set("_h_cty", "JWT"))), 400, ig},
		"zip header":                         {p, form, bearer(sign(k.ok, set("_h_zip", "DEF"))), 400, ig},
		"kid not a string":                   {p, form, bearer(sign(k.ok, set("_h_kid", 7))), 400, ig},
		"scope of only spaces":               {p, form, bearer(sign(k.ok, nil), "scope", "   "), 400, tokenserver.CodeInvalidScope},
		"signature split by a newline":       {p, form, bearer(good[:len(good)-10] + "\n" + good[len(good)-10:]), 400, ig},
		"form scope wider than the claim":    {p, form, bearer(sign(k.ok, set("scope", "a")), "scope", "a b"), 400, tokenserver.CodeInvalidScope},
		"client assertion without jti":       {p, form, clientCreds(sign(k.ok, func(c gojwt.MapClaims) { c["sub"] = k.ok.ClientID; delete(c, "jti") })), 401, ic},
		"client assertion expired":           {p, form, clientCreds(sign(k.ok, func(c gojwt.MapClaims) { c["sub"] = k.ok.ClientID; c["exp"] = now.Add(-5 * time.Minute).Unix() })), 401, ic},
	}
}

func mustKey(t *testing.T, kf keyutil.KeyFile) *rsa.PrivateKey {
	t.Helper()
	k, _, err := keyutil.ParsePrivateKey([]byte(kf.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBadRequests sends every kind of bad token request over a real listener: each
// gets the exact RFC 6749 §5.2 error and status, as JSON, never a token, never a 500.
func TestBadRequests(t *testing.T) {
	k := prepareBadKeys(t)
	cases := badCases(t, k)
	if len(cases) < 61 {
		t.Fatalf("only %d cases", len(cases))
	}
	// Refused before the caller proved it holds a key: one generic description, so
	// nobody learns which ServiceKeys and key IDs exist or what state they are in.
	generic := map[string]bool{"unknown kid": true, "kid of another ServiceKey": true, "unknown iss": true, "iss of another ServiceKey": true,
		"very long iss": true, "signed by a stranger, no kid": true, "tampered signature": true, "retired key": true, "client assertion bad signature": true}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			resp := do(t, tc.method, tc.contentType, tc.body)
			var body struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
				AccessToken string `json:"access_token"`
			}
			if err := json.Unmarshal([]byte(resp.body), &body); err != nil {
				t.Fatalf("status %d, body is not JSON: %q", resp.status, resp.body)
			}
			if resp.status != tc.status || body.Error != tc.code || body.AccessToken != "" {
				t.Errorf("got %d %s (%s), want %d %s", resp.status, body.Error, body.Description, tc.status, tc.code)
			}
			if generic[name] && body.Description != tokenserver.GenericAssertionRefusal {
				t.Errorf("an unauthenticated caller was told %q", body.Description)
			}
			if body.Description == "" || len(body.Description) > 400 || strings.ContainsFunc(body.Description, func(r rune) bool { return r < 0x20 || r > 0x7e || r == '"' || r == '\\' }) {
				t.Errorf("description %q is empty, too long or not RFC 6749 §5.2 characters", body.Description)
			}
			if !strings.HasPrefix(resp.header.Get("Content-Type"), "application/json") || resp.header.Get("Cache-Control") != "no-store" {
				t.Errorf("headers %v", resp.header)
			}
		})
	}
}

// TestReplayedAssertion: the same assertion (same jti) is exchanged once only.
func TestReplayedAssertion(t *testing.T) {
	kf := readyKey(t, "replay", v1.ServiceKeySpec{})
	a := signAssertion(t, kf, nil)
	if r := postForm(t, url.Values{"grant_type": {tokenserver.GrantTypeJWTBearer}, "assertion": {a}}); r.status != 200 {
		t.Fatalf("first use: %d %s", r.status, r.body)
	}
	r := postForm(t, url.Values{"grant_type": {tokenserver.GrantTypeJWTBearer}, "assertion": {a}})
	if r.status != 400 || !strings.Contains(r.body, `"error":"invalid_grant"`) || !strings.Contains(r.body, "was already used") {
		t.Fatalf("replay: %d %s", r.status, r.body)
	}
}
