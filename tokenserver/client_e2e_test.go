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
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/client"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
	"github.com/servicekey-operator/servicekey-operator/verifier"
)

// countingTransport counts requests and notes any Authorization header.
type countingTransport struct {
	n       atomic.Int64
	sawAuth atomic.Bool
	// lifetime is exp - now of the last grant sent, in seconds.
	lifetime atomic.Int64
	// jtis are the jti claims of the grants sent.
	mu   sync.Mutex
	jtis []string
	// grants are the grant types sent, in order.
	grants []string
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	if r.Header.Get("Authorization") != "" {
		c.sawAuth.Store(true)
	}
	if r.GetBody != nil {
		body, _ := r.GetBody()
		data, _ := io.ReadAll(body)
		form, _ := url.ParseQuery(string(data))
		c.mu.Lock()
		c.grants = append(c.grants, form.Get("grant_type"))
		c.mu.Unlock()
		claims := gojwt.MapClaims{}
		if _, _, err := gojwt.NewParser().ParseUnverified(form.Get("assertion"), claims); err == nil {
			if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
				c.lifetime.Store(int64(time.Until(exp.Time).Seconds()))
			}
			if jti, _ := claims["jti"].(string); jti != "" {
				c.mu.Lock()
				c.jtis = append(c.jtis, jti)
				c.mu.Unlock()
			}
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

func writeKeyFile(t *testing.T, path string, kf keyutil.KeyFile) {
	t.Helper()
	data, err := kf.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// Like the kubelet: write elsewhere, then rename over the old file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestTokenSourceCachesAndRefreshesEarly(t *testing.T) {
	kf := readyKey(t, "kit-cache", v1.ServiceKeySpec{Scopes: []string{"a"}})
	path := filepath.Join(t.TempDir(), "key.json")
	writeKeyFile(t, path, kf)
	clk := clocktesting.NewFakeClock(time.Now())
	rt := &countingTransport{}
	src, err := client.NewTokenSource(client.Options{KeyFile: path, HTTPClient: &http.Client{Transport: rt}, Clock: clk, RefreshBefore: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t1, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	t2, _ := src.Token()
	if t1 != t2 || rt.n.Load() != 1 {
		t.Fatalf("second Token() fetched again (%d token requests)", rt.n.Load())
	}
	clk.SetTime(t1.Expiry.Add(-30 * time.Second)) // within RefreshBefore of expiry
	t3, err := src.Token()
	if err != nil || t3 == t1 || rt.n.Load() != 2 {
		t.Fatalf("no early refresh: %v, %d token requests", err, rt.n.Load())
	}
	if rt.sawAuth.Load() {
		t.Error("an Authorization header was sent to the token endpoint")
	}
	rt.mu.Lock()
	if len(rt.jtis) != 2 || rt.jtis[0] == rt.jtis[1] {
		t.Errorf("assertion jtis %q; want a fresh one in each of the 2 grants", rt.jtis)
	}
	rt.mu.Unlock()
	if l := time.Duration(rt.lifetime.Load()) * time.Second; l <= 0 || l > client.AssertionLifetime {
		t.Errorf("the grant expires in %v, want within client.AssertionLifetime (%v)", l, client.AssertionLifetime)
	}
}

func TestTokenSourcePicksUpRotatedKeyFile(t *testing.T) {
	old := readyKey(t, "kit-rotate", v1.ServiceKeySpec{Rotation: v1.RotationSpec{GracePeriod: &metav1.Duration{Duration: time.Second}}})
	path := filepath.Join(t.TempDir(), "key.json")
	writeKeyFile(t, path, old)
	src, err := client.NewTokenSource(client.Options{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	patchKey(t, "kit-rotate", func(sk *v1.ServiceKey) { sk.Annotations = map[string]string{v1.AnnotationRotate: "1"} })
	current := waitKeyFile(t, "kit-rotate", func(sk *v1.ServiceKey) bool {
		return sk.Status.Keys[0].State == v1.KeyActive && sk.Status.Keys[0].KeyID != old.KeyID
	})
	refusedWithin(t, old, tokenserver.GenericAssertionRefusal) // only the new key works from here on
	writeKeyFile(t, path, current)                             // the kubelet delivers the rotated Secret
	src.Invalidate(tok)
	if _, err := src.Token(); err != nil {
		t.Fatalf("the rotated key file was not picked up: %v", err)
	}
}

func TestTokenSourceErrors(t *testing.T) {
	kf := readyKey(t, "kit-errors", v1.ServiceKeySpec{})
	dir := t.TempDir()
	good := filepath.Join(dir, "key.json")
	writeKeyFile(t, good, kf)
	bad := filepath.Join(dir, "bad.json")
	broken := kf
	broken.PrivateKey = "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0\n-----END RSA PRIVATE KEY-----\n"
	writeKeyFile(t, bad, broken)
	cases := map[string]struct {
		path string
		want string
	}{
		"missing file": {filepath.Join(dir, "nope.json"), "read key file"},
		"broken key":   {bad, "private_key: malformed PKCS #1"},
		"not JSON":     {writeRaw(t, dir, "{"), "not valid JSON"},
		"no token_uri": {writeRaw(t, dir, `{"key_id":"k","client_id":"a/b","private_key":`+jsonString(kf.PrivateKey)+`}`), "no token_uri"},
		"token_uri over plain http to another host": {writeRaw(t, dir, `{"key_id":"k","client_id":"a/b","token_uri":"http://token.example.com/oauth2/token","private_key":`+jsonString(kf.PrivateKey)+`}`),
			"client: refusing to send a grant over plain http to http://token.example.com/oauth2/token"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := client.NewTokenSource(client.Options{KeyFile: tc.path})
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "c2VjcmV0") {
				t.Fatalf("error %v, want %q without key material", err, tc.want)
			}
		})
	}
	src, err := client.NewTokenSource(client.Options{KeyFile: good})
	if err != nil {
		t.Fatal(err)
	}
	patchKey(t, "kit-errors", func(sk *v1.ServiceKey) { sk.Spec.Suspended = true })
	var refusal error
	eventually(t, "refusal to reach the client", func() (bool, string) {
		tok, err := src.Token()
		if err == nil {
			src.Invalidate(tok) // issued before the suspension arrived; ask again
		}
		refusal = err
		return err != nil && strings.Contains(err.Error(), "token endpoint refused the grant: invalid_grant: the ServiceKey apps/kit-errors is suspended"), errString(err)
	})
	// The refusal keeps what a caller decides retries by: the code and the HTTP status.
	var refused *client.RefusedError
	var re *oauth2.RetrieveError
	if !errors.As(refusal, &refused) || refused.Code != "invalid_grant" || !errors.As(refusal, &re) || re.Response.StatusCode != http.StatusBadRequest {
		t.Errorf("refusal %v: want a *client.RefusedError invalid_grant over an *oauth2.RetrieveError with HTTP 400", refusal)
	}
}

func writeRaw(t *testing.T, dir, content string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(content)
	_ = f.Close()
	return f.Name()
}

func jsonString(s string) string { b, _ := json.Marshal(s); return string(b) }

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// shortServer is a second token server whose tokens live four seconds: short enough
// to expire during a test, long enough that a retried request lands in time.
func shortServer(t *testing.T) string {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	_, err = tokenserver.Start(ctx, serverConfig, testScheme, tokenserver.Options{
		Issuer: "https://token.test", TokenURL: tokenURL, Listen: addr,
		SigningSecret: types.NamespacedName{Namespace: systemNS, Name: signingKey},
		MaxTTL:        4 * time.Second, DefaultAudience: []string{"https://api.test"}, ReplayCacheSize: 100, ReplayPerClient: 100,
		LastUsedGranularity: time.Hour, Clock: clock.RealClock{}, Log: ctrl.Log.WithName("short"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + addr + "/oauth2/token"
}

// resourceServer records every request body and hands the request to the real
// verifier middleware (or, with always, answers "expired" to everything).
type resourceServer struct {
	mu     sync.Mutex
	bodies []string
	always bool
	next   http.Handler
}

func (rs *resourceServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rs.mu.Lock()
	rs.bodies = append(rs.bodies, string(body))
	rs.mu.Unlock()
	if rs.always {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="Access token expired"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	rs.next.ServeHTTP(w, r)
}

// apiVerifier checks tokens of the suite's token servers as a resource server would.
func apiVerifier(t *testing.T) *verifier.Verifier {
	t.Helper()
	v, err := verifier.New(t.Context(), verifier.Options{Issuer: "https://token.test", Audience: "https://api.test",
		DiscoveryURL: baseURL + "/.well-known/oauth-authorization-server", JWKSURL: baseURL + "/.well-known/jwks.json", Leeway: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRetryOnceOnExpiredToken(t *testing.T) {
	short := shortServer(t)
	kf := readyKey(t, "kit-retry", v1.ServiceKeySpec{})
	path := filepath.Join(t.TempDir(), "key.json")
	writeKeyFile(t, path, kf)
	rt := &countingTransport{}
	// The client's clock lags an hour: it believes its token valid, the resource
	// server (real time) finds it expired — the situation the retry exists for.
	lagging := clocktesting.NewFakeClock(time.Now().Add(-time.Hour))
	src, err := client.NewTokenSource(client.Options{KeyFile: path, TokenURL: short, HTTPClient: &http.Client{Transport: rt}, Clock: lagging})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		always       bool
		wantStatus   int
		wantAttempts int
	}{
		"expired once: one new token, one re-send":  {false, 200, 2},
		"still refused: the second 401 is returned": {true, 401, 2},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
			rs := &resourceServer{always: tc.always, next: apiVerifier(t).Require()(ok)}
			srv := httptest.NewServer(rs)
			defer srv.Close()
			httpc := &http.Client{Transport: &client.Transport{Source: src, AllowedOrigins: []string{srv.URL}}}
			tok, err := src.Token()
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "the cached token to expire", func() (bool, string) { return time.Now().After(tok.Expiry.Add(time.Second)), "" })
			before := rt.n.Load()
			resp, err := httpc.Post(srv.URL, "text/plain", strings.NewReader("payload-"+name))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			rs.mu.Lock()
			defer rs.mu.Unlock()
			if resp.StatusCode != tc.wantStatus || len(rs.bodies) != tc.wantAttempts || rt.n.Load()-before != 1 {
				t.Fatalf("status %d, %d attempts, %d new tokens; want %d, %d, 1", resp.StatusCode, len(rs.bodies), rt.n.Load()-before, tc.wantStatus, tc.wantAttempts)
			}
			for _, b := range rs.bodies {
				if b != "payload-"+name {
					t.Errorf("body %q, want it intact on every attempt", b)
				}
			}
			if rt.sawAuth.Load() {
				t.Error("an Authorization header was sent to the token endpoint")
			}
		})
	}
}

// TestTransportSendsTokensOnlyWhereMeant: the client kit sends the access token to
// the origins of its audiences (or AllowedOrigins), over https or loopback http, and
// nowhere else: not to another host, not after a redirect, not over plain http.
func TestTransportSendsTokensOnlyWhereMeant(t *testing.T) {
	var sawToken atomic.Int64
	record := func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			sawToken.Add(1)
		}
		_, _ = w.Write([]byte("ok"))
	}
	other := httptest.NewServer(http.HandlerFunc(record))
	defer other.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, other.URL+"/stolen", http.StatusFound)
			return
		}
		record(w, r)
	}))
	defer api.Close()
	kf := readyKey(t, "kit-origins", v1.ServiceKeySpec{Audiences: []string{api.URL, "billing"}})
	path := filepath.Join(t.TempDir(), "key.json")
	writeKeyFile(t, path, kf)
	src, err := client.NewTokenSource(client.Options{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		transport *client.Transport
		url       string
		want      string // substring of the error; "" means sent with the token
	}{
		"the key's audience":                   {&client.Transport{Source: src}, api.URL + "/x", ""},
		"another origin":                       {&client.Transport{Source: src}, other.URL + "/x", "not among the allowed origins"},
		"redirect to another origin":           {&client.Transport{Source: src}, api.URL + "/redirect", "not among the allowed origins"},
		"plain http, not loopback":             {&client.Transport{Source: src}, "http://billing.invalid/x", "over plain http"},
		"not http at all":                      {&client.Transport{Source: src}, "ftp://" + strings.TrimPrefix(api.URL, "http://"), "only https"},
		"AllowedOrigins replace the audiences": {&client.Transport{Source: src, AllowedOrigins: []string{other.URL}}, api.URL + "/x", "not among the allowed origins"},
		"AllowedOrigins admit":                 {&client.Transport{Source: src, AllowedOrigins: []string{other.URL}}, other.URL + "/x", ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := sawToken.Load()
			resp, err := (&http.Client{Transport: tc.transport}).Get(tc.url)
			if err == nil {
				_ = resp.Body.Close()
			}
			switch {
			case tc.want == "" && (err != nil || sawToken.Load() != before+1):
				t.Fatalf("not sent with the token: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			case tc.want != "" && sawToken.Load() != before:
				t.Fatal("the token reached a server it was not meant for")
			}
		})
	}
}
