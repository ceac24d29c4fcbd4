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

package tokenserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/golang-jwt/jwt/v5"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
)

// The fuzz targets run in CI for a bounded time each (make fuzz); a crash they find
// becomes a file under testdata/fuzz/<target>, which plain `go test` then replays.

// fuzzCodes are every error code the endpoints may answer.
var fuzzCodes = []string{CodeInvalidRequest, CodeInvalidClient, CodeInvalidGrant, CodeUnauthorizedClient,
	CodeUnsupportedGrantType, CodeInvalidScope, CodeTemporarilyUnavailable, "invalid_token", "insufficient_scope"}

// fuzzHandler is a token endpoint with one ServiceKey (team/app) and its key, as the
// exchange tests use, with a fresh replay cache per call so inputs stay independent.
func fuzzHandler(t testing.TB) (http.Handler, keyPair) {
	k := newPair(t)
	keys, err := LoadSigningKeys(map[string][]byte{SigningCurrent: ecPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	lookup := mapLookup{"team/app": {ClientID: "team/app", Subject: "system:servicekey:team:app", Scopes: []string{"a", "b"},
		ClientSecretHash: "sha256:x", Request: policy.Request{Namespace: "team", Name: "app", Scopes: []string{"a", "b"}},
		Keys: []PublicKey{{ID: k.id, Key: &k.priv.PublicKey, Active: true}}}}
	gate := openGate("team")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := &Exchanger{Issuer: "https://token.test", MaxTTL: time.Hour, Policy: testPolicy, Lookup: lookup,
			Keys: func() *SigningKeys { return keys }, State: NewMemoryState(NewReplayCache(10, 10), nil, 10), Clock: clocktesting.NewFakeClock(now),
			NewID: func() string { return "id" }, Policies: gate}
		(&TokenHandler{Exchanger: x, Log: logr.Discard()}).ServeHTTP(w, r)
	})
	return h, k
}

// checkAnswer is what every answer must be: JSON, a token or a known RFC 6749 §5.2
// code with an ASCII description, never a 5xx but 503.
func checkAnswer(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", rec.Code)
	}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("status %d, body is not JSON", rec.Code)
	}
	if rec.Code == http.StatusOK {
		if body.AccessToken == "" {
			t.Fatal("200 without a token")
		}
		return
	}
	if !slices.Contains(fuzzCodes, body.Error) || strings.ContainsFunc(body.Description, func(r rune) bool { return r < 0x20 || r > 0x7e || r == '"' || r == '\\' }) {
		t.Fatalf("status %d, error %q, description %q", rec.Code, body.Error, body.Description)
	}
}

// FuzzTokenEndpoint sends arbitrary bodies, methods and content types.
func FuzzTokenEndpoint(f *testing.F) {
	h, k := fuzzHandler(f)
	good := sign(f, jwt.SigningMethodRS256, k.priv, k.id, func(c jwt.MapClaims) { c["iss"] = "team/app" })
	for _, seed := range []string{
		"", "grant_type=", "grant_type=password&username=a&password=b", "grant_type=%zz",
		url.Values{"grant_type": {GrantTypeJWTBearer}, "assertion": {good}}.Encode(),
		url.Values{"grant_type": {GrantTypeJWTBearer}, "assertion": {good}, "scope": {"a b"}}.Encode(),
		url.Values{"grant_type": {GrantTypeClientCreds}, "client_assertion_type": {ClientAssertionJWTURN}, "client_assertion": {good}}.Encode(),
		url.Values{"grant_type": {GrantTypeClientCreds}, "client_id": {"team/app"}, "client_secret": {"s"}}.Encode(),
		"grant_type=client_credentials&grant_type=client_credentials",
	} {
		f.Add(http.MethodPost, "application/x-www-form-urlencoded", seed)
	}
	f.Add(http.MethodGet, "", "")
	f.Add(http.MethodPost, "application/json", `{"grant_type":"client_credentials"}`)
	f.Fuzz(func(t *testing.T, method, contentType, body string) {
		if !validMethod(method) {
			return
		}
		req := httptest.NewRequest(method, "/oauth2/token", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		checkAnswer(t, rec)
	})
}

// FuzzAssertion sends arbitrary assertions (seeded with valid ones, and with the
// header and claim shapes of the bad-request table) and scopes as a jwt-bearer grant.
func FuzzAssertion(f *testing.F) {
	h, k := fuzzHandler(f)
	iss := func(c jwt.MapClaims) { c["iss"] = "team/app" }
	f.Add(sign(f, jwt.SigningMethodRS256, k.priv, k.id, iss), "")
	f.Add(sign(f, jwt.SigningMethodPS256, k.priv, "", iss), "a")
	f.Add(sign(f, jwt.SigningMethodRS256, k.priv, k.id, func(c jwt.MapClaims) { iss(c); c["scope"] = "a b" }), "b")
	f.Add(sign(f, jwt.SigningMethodRS256, k.priv, k.id, func(c jwt.MapClaims) { iss(c); delete(c, "jti") }), "")
	f.Add(signH(f, k, map[string]any{"typ": "at+jwt", "crit": []string{"b64"}, "jku": "x"}), "")
	f.Add(sign(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, k.id, iss), "")
	f.Add("e30.e30.", "")
	f.Fuzz(func(t *testing.T, assertion, scope string) {
		rec := httptest.NewRecorder()
		form := url.Values{"grant_type": {GrantTypeJWTBearer}, "assertion": {assertion}, "scope": {scope}}
		req := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		h.ServeHTTP(rec, req)
		checkAnswer(t, rec)
	})
}

// FuzzIntrospection sends arbitrary caller credentials and tokens to introspection.
func FuzzIntrospection(f *testing.F) {
	keys, err := LoadSigningKeys(map[string][]byte{SigningCurrent: ecPEM(f)})
	if err != nil {
		f.Fatal(err)
	}
	lookup := mapLookup{"team/rs": {ClientID: "team/rs", Subject: "system:servicekey:team:rs", Scopes: []string{DefaultIntrospectionScope},
		Request: policy.Request{Namespace: "team", Name: "rs", Scopes: []string{DefaultIntrospectionScope}}}}
	in := &Introspector{Issuer: "https://token.test", Scope: DefaultIntrospectionScope, Keys: func() *SigningKeys { return keys },
		Lookup: lookup, Policies: openGate("team"), DefaultAudience: []string{"https://token.test"}, MaxTTL: time.Hour,
		Clock: clocktesting.NewFakeClock(now), Log: logr.Discard()}
	caller, err := keys.Sign(AccessTokenClaims{RegisteredClaims: jwt.RegisteredClaims{Issuer: "https://token.test", Subject: "system:servicekey:team:rs",
		Audience: []string{"https://token.test"}, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
		ClientID: "team/rs", Scope: DefaultIntrospectionScope})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("Bearer "+caller, "token="+caller)
	f.Add("Bearer "+caller, "token=x.y.z")
	f.Add("Bearer x", "token=")
	f.Add("", "token=%zz")
	f.Fuzz(func(t *testing.T, authorization, body string) {
		req := httptest.NewRequest(http.MethodPost, "/oauth2/introspect", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", authorization)
		rec := httptest.NewRecorder()
		in.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK {
			var resp IntrospectionResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatal("200 that is not an introspection response")
			}
			return
		}
		checkAnswer(t, rec)
	})
}

// validMethod keeps to what net/http can put on the wire: a token per RFC 9110 §5.6.2.
func validMethod(m string) bool {
	return m != "" && !strings.ContainsFunc(m, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r)
	})
}
