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
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/golang-jwt/jwt/v5"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// TestIntrospectionRateLimitAndAudit: each caller has its own budget (429 with
// Retry-After beyond it), and every call leaves one audit line naming the caller and
// the outcome, never a token.
func TestIntrospectionRateLimitAndAudit(t *testing.T) {
	keys, err := LoadSigningKeys(map[string][]byte{SigningCurrent: ecPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	record := func(name string, scopes ...string) *KeyRecord {
		return &KeyRecord{ClientID: "team/" + name, Subject: "system:servicekey:team:" + name, Scopes: scopes,
			Request: policy.Request{Namespace: "team", Name: name, Scopes: scopes}}
	}
	scope := DefaultIntrospectionScope + ":https://token.test" // the audience of team/app's tokens
	lookup := mapLookup{"team/rs": record("rs", scope), "team/rs2": record("rs2", scope), "team/app": record("app")}
	token := func(client, scope string) string {
		s, err := keys.Sign(AccessTokenClaims{RegisteredClaims: jwt.RegisteredClaims{Issuer: "https://token.test", Subject: lookup[client].Subject,
			Audience: []string{"https://token.test"}, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)), ID: "jti-" + client},
			ClientID: client, Scope: scope})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(prefix, args string) { mu.Lock(); lines = append(lines, args); mu.Unlock() }, funcr.Options{})
	gate := openGate("team")
	grant := testenv.OpenPolicy("introspection", nil)
	grant.Spec.Allowed.Scopes = []string{scope}
	gate.PolicyHandler().OnAdd(grant, true)
	in := &Introspector{Issuer: "https://token.test", Scope: DefaultIntrospectionScope, Keys: func() *SigningKeys { return keys },
		Lookup: lookup, Policies: gate, DefaultAudience: []string{"https://token.test"}, MaxTTL: time.Hour,
		Clock: clocktesting.NewFakeClock(now), Limiter: NewLimiter(1, 2), Log: log}
	srv := httptest.NewServer(in)
	defer srv.Close()
	rs, rs2, app := token("team/rs", scope), token("team/rs2", scope), token("team/app", "")
	type answer struct {
		StatusCode int
		retryAfter string
	}
	call := func(caller string) answer {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(url.Values{"token": {app}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+caller)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return answer{resp.StatusCode, resp.Header.Get("Retry-After")}
	}
	for i := range 2 {
		if r := call(rs); r.StatusCode != 200 {
			t.Fatalf("call %d within the burst: %d", i, r.StatusCode)
		}
	}
	if r := call(rs); r.StatusCode != http.StatusTooManyRequests || r.retryAfter != "1" {
		t.Errorf("over the budget: %d, Retry-After %q", r.StatusCode, r.retryAfter)
	}
	if r := call(rs2); r.StatusCode != 200 {
		t.Errorf("another caller was limited too: %d", r.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{`"caller"="team/rs" "token_client_id"="team/app" "token_jti"="jti-team/app" "outcome"="active"`,
		`"caller"="team/rs" "token_client_id"="" "token_jti"="" "outcome"="rate_limited"`,
		`"caller"="team/rs2" "token_client_id"="team/app" "token_jti"="jti-team/app" "outcome"="active"`}
	all := strings.Join(lines, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("no audit line with %s in:\n%s", w, all)
		}
	}
	if len(lines) != 4 {
		t.Errorf("%d audit lines for 4 calls", len(lines))
	}
	for _, tok := range []string{rs, rs2, app} {
		if strings.Contains(all, tok[strings.LastIndex(tok, ".")+1:]) {
			t.Errorf("the audit log holds a token's signature: %d bytes of log", len(all))
		}
	}
}
