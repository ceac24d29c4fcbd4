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

package verifier_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
	"github.com/servicekey-operator/servicekey-operator/verifier"
)

// keyServer serves RFC 8414 metadata and a JWKS whose keys the test can change.
type keyServer struct {
	mu   sync.Mutex
	keys []jose.JSONWebKey
	srv  *httptest.Server
	// maxAge is the JWKS's Cache-Control max-age ("" sends none); hang, when set,
	// makes JWKS requests wait until it is closed.
	maxAge  string
	hang    chan struct{}
	delay   time.Duration // each JWKS answer waits this long
	fetches int
}

func (k *keyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch r.URL.Path {
	case "/.well-known/oauth-authorization-server":
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": k.srv.URL, "jwks_uri": k.srv.URL + "/jwks"})
	case "/jwks":
		k.fetches++
		if k.hang != nil {
			hang := k.hang
			k.mu.Unlock()
			<-hang
			k.mu.Lock()
		}
		if k.delay > 0 {
			k.mu.Unlock()
			time.Sleep(k.delay) // the slow JWKS endpoint under test, not synchronisation
			k.mu.Lock()
		}
		if k.maxAge != "" {
			w.Header().Set("Cache-Control", "public, max-age="+k.maxAge)
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: k.keys})
	default:
		http.NotFound(w, r)
	}
}

func (k *keyServer) publish(id string, key *ecdsa.PrivateKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = append(k.keys, jose.JSONWebKey{Key: &key.PublicKey, KeyID: id, Algorithm: "ES256", Use: "sig"})
}

func mint(t testing.TB, key any, method jwt.SigningMethod, kid, typ string, mutate func(jwt.MapClaims), iss string) string {
	t.Helper()
	now := time.Now()
	c := jwt.MapClaims{"iss": iss, "aud": "https://api.test", "sub": "system:servicekey:a:b", "client_id": "a/b",
		"scope": "read write", "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": "x"}
	if mutate != nil {
		mutate(c)
	}
	header := map[string]any{}
	for name, v := range c { // "_h_<name>": a header parameter, not a claim
		if h, ok := strings.CutPrefix(name, "_h_"); ok {
			header[h] = v
			delete(c, name)
		}
	}
	tok := jwt.NewWithClaims(method, c)
	tok.Header["kid"] = kid
	if typ == "" {
		delete(tok.Header, "typ")
	} else {
		tok.Header["typ"] = typ
	}
	for name, v := range header {
		tok.Header[name] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRequire(t *testing.T) {
	b, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks := &keyServer{}
	a := startKeys(t, ks)
	v := newVerifier(t, ks, verifier.Options{UnknownKIDRefresh: time.Millisecond})
	api := httptest.NewServer(v.Require("read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := verifier.ClaimsFrom(r.Context())
		_, _ = w.Write([]byte(c.ClientID))
	})))
	defer api.Close()
	iss := ks.srv.URL
	es, at := jwt.SigningMethodES256, "at+jwt"
	set := func(k string, val any) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c[k] = val } }
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"iss": iss, "aud": "https://api.test", "exp": time.Now().Add(time.Minute).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	cases := map[string]struct {
		header      string
		status      int
		code        string
		description string
	}{
		"valid":                  {"Bearer " + mint(t, a, es, "a", at, nil, iss), 200, "", ""},
		"typ application/at+jwt": {"Bearer " + mint(t, a, es, "a", "application/at+jwt", nil, iss), 200, "", ""},
		"expired":                {"Bearer " + mint(t, a, es, "a", at, set("exp", time.Now().Add(-time.Hour).Unix()), iss), 401, "invalid_token", "Access token expired"},
		"wrong aud":              {"Bearer " + mint(t, a, es, "a", at, set("aud", "https://other.test"), iss), 401, "invalid_token", "audience"},
		"wrong iss":              {"Bearer " + mint(t, a, es, "a", at, nil, "https://evil.test"), 401, "invalid_token", "issuer"},
		"nbf in the future":      {"Bearer " + mint(t, a, es, "a", at, set("nbf", time.Now().Add(time.Hour).Unix()), iss), 401, "invalid_token", "not valid yet"},
		"no exp":                 {"Bearer " + mint(t, a, es, "a", at, func(c jwt.MapClaims) { delete(c, "exp") }, iss), 401, "invalid_token", "exp"},
		"typ JWT":                {"Bearer " + mint(t, a, es, "a", "JWT", nil, iss), 401, "invalid_token", "typ must be at+jwt"},
		"no typ":                 {"Bearer " + mint(t, a, es, "a", "", nil, iss), 401, "invalid_token", "has no typ"},
		"jku header":             {"Bearer " + mint(t, a, es, "a", at, set("_h_jku", iss+"/jwks"), iss), 401, "invalid_token", "has jku"},
		"embedded jwk":           {"Bearer " + mint(t, a, es, "a", at, set("_h_jwk", map[string]any{"kty": "EC"}), iss), 401, "invalid_token", "has jwk"},
		"crit header":            {"Bearer " + mint(t, a, es, "a", at, set("_h_crit", []string{"b64"}), iss), 401, "invalid_token", "has crit"},
		"kid not a string":       {"Bearer " + mint(t, a, es, "a", at, set("_h_kid", 1), iss), 401, "invalid_token", "kid is not a string"},
		"alg none":               {"Bearer " + none, 401, "invalid_token", "signing method"},
		"HS256":                  {"Bearer " + mint(t, []byte("secret"), jwt.SigningMethodHS256, "a", at, nil, iss), 401, "invalid_token", "signing method"},
		"unknown kid":            {"Bearer " + mint(t, b, es, "b", at, nil, iss), 401, "invalid_token", "invalid access token"},
		"missing scope":          {"Bearer " + mint(t, a, es, "a", at, set("scope", "write"), iss), 403, "insufficient_scope", "lacks scope read"},
		"not a JWT":              {"Bearer abc", 401, "invalid_token", "malformed"},
		"Basic scheme":           {"Basic YTpi", 400, "invalid_request", "Bearer <token>"},
		"Bearer without token":   {"Bearer", 400, "invalid_request", "Bearer <token>"},
		"two tokens":             {"Bearer a b", 400, "invalid_request", "Bearer <token>"},
		"no header":              {"", 401, "", ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			status, header, body := call(t, api.URL, tc.header)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%s %s)", status, tc.status, header, body)
			}
			if tc.code == "" {
				if status == 401 && !strings.HasPrefix(header, "Bearer") {
					t.Errorf("WWW-Authenticate %q", header)
				}
				return
			}
			var b struct{ Error, ErrorDescription string }
			_ = json.Unmarshal([]byte(strings.Replace(body, "error_description", "ErrorDescription", 1)), &b)
			if b.Error != tc.code || !strings.Contains(b.ErrorDescription, tc.description) ||
				!strings.Contains(header, `error="`+tc.code+`"`) {
				t.Errorf("body %s, header %s; want %s %q", body, header, tc.code, tc.description)
			}
		})
	}
	// The unknown kid is published (a signing-key rotation): the JWKS is refetched.
	ks.publish("b", b)
	if status, _, body := call(t, api.URL, "Bearer "+mint(t, b, es, "b", at, nil, iss)); status != 200 || body != "a/b" {
		t.Fatalf("after publishing kid b: %d %s", status, body)
	}
}

func TestAuthorizeByCaller(t *testing.T) {
	ks := &keyServer{}
	a := startKeys(t, ks)
	v := newVerifier(t, ks, verifier.Options{})
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	token := func(sub, clientID, scope string) string {
		return "Bearer " + mint(t, a, jwt.SigningMethodES256, "a", "at+jwt", func(c jwt.MapClaims) {
			c["sub"], c["client_id"], c["scope"] = sub, clientID, scope
		}, ks.srv.URL)
	}
	billing := token("system:servicekey:billing:worker", "billing/worker", "read")
	payments := token("system:servicekey:payments:worker", "payments/worker", "read")
	cases := map[string]struct {
		rule   verifier.Rule
		header string
		status int
	}{
		"no identity rule admits any caller":  {verifier.Rule{Scopes: []string{"read"}}, payments, 204},
		"subject listed":                      {verifier.Rule{Subjects: []string{"system:servicekey:billing:worker"}}, billing, 204},
		"subject not listed":                  {verifier.Rule{Subjects: []string{"system:servicekey:billing:worker"}}, payments, 403},
		"client_id listed":                    {verifier.Rule{ClientIDs: []string{"payments/worker"}}, payments, 204},
		"client_id not listed":                {verifier.Rule{ClientIDs: []string{"payments/worker"}}, billing, 403},
		"either list admits":                  {verifier.Rule{Subjects: []string{"x"}, ClientIDs: []string{"billing/worker"}}, billing, 204},
		"identity right, scope missing":       {verifier.Rule{Scopes: []string{"write"}, ClientIDs: []string{"billing/worker"}}, billing, 403},
		"client_id is not matched as subject": {verifier.Rule{Subjects: []string{"billing/worker"}}, billing, 403},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			api := httptest.NewServer(v.Authorize(tc.rule)(ok))
			defer api.Close()
			status, header, body := call(t, api.URL, tc.header)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%s %s)", status, tc.status, header, body)
			}
			if status == 403 && !strings.Contains(header, `error="insufficient_scope"`) {
				t.Errorf("WWW-Authenticate %q", header)
			}
		})
	}
}

func call(t *testing.T, url, authorization string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), strings.TrimSpace(string(body))
}

func TestNewChecksDiscovery(t *testing.T) {
	ks := &keyServer{}
	ks.srv = httptest.NewServer(ks)
	defer ks.srv.Close()
	if _, err := verifier.New(context.Background(), verifier.Options{Issuer: ks.srv.URL + "/other", Audience: "x",
		DiscoveryURL: ks.srv.URL + "/.well-known/oauth-authorization-server"}); err == nil || !strings.Contains(err.Error(), "names issuer") {
		t.Fatalf("issuer mismatch accepted: %v", err)
	}
}

// TestRemovedKeyStopsBeingTrusted: the JWKS is refetched at its Cache-Control max-age,
// so a signing key the token server no longer publishes is refused within it (with
// keyfunc's default it stayed trusted for an hour).
func TestRemovedKeyStopsBeingTrusted(t *testing.T) {
	b, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks := &keyServer{maxAge: "1"}
	a := startKeys(t, ks)
	ks.publish("b", b)
	v := newVerifier(t, ks, verifier.Options{})
	tok := mint(t, a, jwt.SigningMethodES256, "a", "at+jwt", nil, ks.srv.URL)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("before the removal: %v", err)
	}
	ks.mu.Lock()
	ks.keys = ks.keys[1:] // only b is published now
	ks.mu.Unlock()
	err := testenv.Poll("a key the JWKS (max-age 1s) dropped is no longer trusted", 30*time.Second, func() (bool, string) {
		_, err := v.Verify(context.Background(), tok)
		return err != nil, "still trusted"
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUnknownKIDNeverHoldsARequest: while the JWKS endpoint hangs, a token with an
// unknown kid is refused after MaxKeyWait instead of holding the request for the
// HTTP timeout (keyfunc's default waited up to a minute for its rate limit).
func TestUnknownKIDNeverHoldsARequest(t *testing.T) {
	ks := &keyServer{}
	a := startKeys(t, ks)
	pending := &pendingTransport{}
	v := newVerifier(t, ks, verifier.Options{UnknownKIDRefresh: time.Hour, HTTPClient: &http.Client{Transport: pending}})
	hang := make(chan struct{})
	defer close(hang)
	ks.mu.Lock()
	ks.hang = hang
	ks.mu.Unlock()
	for i := range 3 { // the first refetch hangs; the next ones hit the rate limit
		if _, err := v.Verify(context.Background(), mint(t, a, jwt.SigningMethodES256, fmt.Sprintf("forged-%d", i), "at+jwt", nil, ks.srv.URL)); err == nil {
			t.Fatal("a token with an unknown kid was accepted")
		}
		// The refusal came while the JWKS request was still hanging: the request did
		// not wait for the fetch to time out.
		if pending.n.Load() == 0 {
			t.Fatalf("request %d was answered only after the hanging JWKS fetch gave up", i)
		}
	}
	if _, err := v.Verify(context.Background(), mint(t, a, jwt.SigningMethodES256, "a", "at+jwt", nil, ks.srv.URL)); err != nil {
		t.Errorf("a known kid is refused while the JWKS endpoint hangs: %v", err)
	}
}

// pendingTransport counts round trips that have not returned yet.
type pendingTransport struct{ n atomic.Int64 }

func (p *pendingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	p.n.Add(1)
	defer p.n.Add(-1)
	return http.DefaultTransport.RoundTrip(r)
}

// TestSlowJWKSStillRefetched: a JWKS that takes longer than MaxKeyWait to answer
// refuses the first token of a new kid quickly, but the refetch it started completes
// in the background, so the next token of that kid verifies.
func TestSlowJWKSStillRefetched(t *testing.T) {
	ks := &keyServer{}
	startKeys(t, ks)
	v := newVerifier(t, ks, verifier.Options{UnknownKIDRefresh: time.Hour})
	b, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks.publish("b", b)
	ks.mu.Lock()
	ks.delay = 600 * time.Millisecond
	ks.mu.Unlock()
	tok := mint(t, b, jwt.SigningMethodES256, "b", "at+jwt", nil, ks.srv.URL)
	if _, err := v.Verify(context.Background(), tok); err == nil {
		t.Fatal("a kid not fetched yet verified at once")
	}
	err := testenv.Poll("the new kid fetched", 20*time.Second, func() (bool, string) {
		_, err := v.Verify(context.Background(), tok)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMaxTokenLifetime(t *testing.T) {
	ks := &keyServer{}
	a := startKeys(t, ks)
	v := newVerifier(t, ks, verifier.Options{MaxTokenLifetime: 10 * time.Minute})
	now := time.Now()
	cases := map[string]struct {
		mutate func(jwt.MapClaims)
		ok     bool
	}{
		"5 minutes":    {nil, true},
		"exactly 10":   {func(c jwt.MapClaims) { c["exp"] = now.Add(10 * time.Minute).Unix(); c["iat"] = now.Unix() }, true},
		"a day":        {func(c jwt.MapClaims) { c["exp"] = now.Add(24 * time.Hour).Unix() }, false},
		"no iat":       {func(c jwt.MapClaims) { delete(c, "iat") }, false},
		"iat long ago": {func(c jwt.MapClaims) { c["iat"] = now.Add(-time.Hour).Unix() }, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), mint(t, a, jwt.SigningMethodES256, "a", "at+jwt", tc.mutate, ks.srv.URL))
			if (err == nil) != tc.ok {
				t.Errorf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// startKeys serves ks (metadata and JWKS) until the test ends, with a new key "a"
// published.
func startKeys(t testing.TB, ks *keyServer) *ecdsa.PrivateKey {
	t.Helper()
	ks.srv = httptest.NewServer(ks)
	t.Cleanup(ks.srv.Close)
	a, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ks.publish("a", a)
	return a
}

// newVerifier is a verifier of ks's issuer for the audience https://api.test, with
// its background JWKS refresh stopped when the test ends.
func newVerifier(t testing.TB, ks *keyServer, opts verifier.Options) *verifier.Verifier {
	t.Helper()
	opts.Issuer, opts.Audience = ks.srv.URL, "https://api.test"
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := verifier.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
