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
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/golang-jwt/jwt/v5"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
)

// exchangeFixture is a token endpoint over a real listener with one ServiceKey
// (team/app, scopes a b c, two usable keys) and signing keys that can be withheld.
type exchangeFixture struct {
	url            string
	active, second keyPair
	signing        *SigningKeys
	loaded         atomic.Bool
}

func newExchangeFixture(t *testing.T) *exchangeFixture {
	t.Helper()
	f := &exchangeFixture{active: newPair(t), second: newPair(t)}
	graceEnd := now.Add(time.Hour)
	lookup := mapLookup{"team/app": {ClientID: "team/app", Subject: "system:servicekey:team:app",
		Scopes: []string{"a", "b", "c"}, Request: policy.Request{Namespace: "team", Name: "app", Scopes: []string{"a", "b", "c"}},
		Keys: []PublicKey{{ID: f.active.id, Key: &f.active.priv.PublicKey, Active: true}, {ID: f.second.id, Key: &f.second.priv.PublicKey, NotAfter: &graceEnd}}}}
	var err error
	if f.signing, err = LoadSigningKeys(map[string][]byte{SigningCurrent: ecPEM(t)}); err != nil {
		t.Fatal(err)
	}
	f.loaded.Store(true)
	x := &Exchanger{Issuer: "https://token.test", MaxTTL: time.Hour, Policy: testPolicy, Lookup: lookup,
		Keys: func() *SigningKeys {
			if f.loaded.Load() {
				return f.signing
			}
			return nil
		},
		State: NewMemoryState(NewReplayCache(100, 100), NewLimiter(1, 2), 10), // the fake clock stands still: two grants per test
		Clock: clocktesting.NewFakeClock(now), NewID: func() string { return "id" }, Policies: openGate("team")}
	srv := httptest.NewServer(&TokenHandler{Exchanger: x, Log: logr.Discard()})
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

type exchangeResult struct {
	status            int
	retryAfter        string
	code, description string
	scope, keyID      string
}

// post sends a form and decodes the answer; a token's claims are read, never printed.
func (f *exchangeFixture) post(t *testing.T, form url.Values) exchangeResult {
	t.Helper()
	resp, err := http.PostForm(f.url, form)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, _ := io.ReadAll(resp.Body)
	var body struct {
		AccessToken string `json:"access_token"`
		Scope       string `json:"scope"`
		Code        string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(data, &body); err != nil {
		t.Fatalf("status %d, body is not JSON", resp.StatusCode)
	}
	r := exchangeResult{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), code: body.Code, description: body.Description, scope: body.Scope}
	if body.AccessToken != "" {
		c, err := f.signing.Verify(body.AccessToken, "https://token.test", now)
		if err != nil {
			t.Fatalf("the issued token does not verify: %v", err)
		}
		r.keyID = c.KeyID
	}
	return r
}

func grantForm(assertion string, scope string) url.Values {
	v := url.Values{"grant_type": {GrantTypeJWTBearer}, "assertion": {assertion}}
	if scope != "" {
		v.Set("scope", scope)
	}
	return v
}

// TestExchangeHardening: replays without jti, scope narrowing, the key that verified,
// and no token (but no 500 either) before the signing keys are loaded.
func TestExchangeHardening(t *testing.T) {
	rs := jwt.SigningMethodRS256
	noJTI := func(c jwt.MapClaims) { delete(c, "jti") }
	withScope := func(s string) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c["scope"] = s } }
	type try struct {
		form   url.Values
		status int
		code   string
		scope  string // granted scope when 200
	}
	cases := map[string]func(f *exchangeFixture) []try{
		"jwt-bearer without jti is single-use": func(f *exchangeFixture) []try {
			a := sign(t, rs, f.active.priv, f.active.id, noJTI)
			other := sign(t, rs, f.active.priv, f.active.id, func(c jwt.MapClaims) { delete(c, "jti"); c["iat"] = now.Add(-time.Second).Unix() })
			return []try{{grantForm(a, ""), 200, "", "a b c"}, {grantForm(a, ""), 400, CodeInvalidGrant, ""}, {grantForm(other, ""), 200, "", "a b c"}}
		},
		"the same claims signed again are the same grant": func(f *exchangeFixture) []try {
			// PS256 signatures are randomised: two signatures, one signed header and claims.
			a := sign(t, jwt.SigningMethodPS256, f.active.priv, f.active.id, noJTI)
			b := sign(t, jwt.SigningMethodPS256, f.active.priv, f.active.id, noJTI)
			if a == b {
				t.Fatal("PS256 gave the same signature twice")
			}
			return []try{{grantForm(a, ""), 200, "", "a b c"}, {grantForm(b, ""), 400, CodeInvalidGrant, ""}}
		},
		"a replay spends no rate budget": func(f *exchangeFixture) []try {
			a := sign(t, rs, f.active.priv, f.active.id, nil)
			return []try{{grantForm(a, ""), 200, "", "a b c"}, {grantForm(a, ""), 400, CodeInvalidGrant, ""}, {grantForm(a, ""), 400, CodeInvalidGrant, ""},
				{grantForm(sign(t, rs, f.active.priv, f.active.id, func(c jwt.MapClaims) { c["jti"] = "fresh" }), ""), 200, "", "a b c"}}
		},
		"scope of only spaces": func(f *exchangeFixture) []try {
			return []try{{grantForm(sign(t, rs, f.active.priv, f.active.id, withScope("  ")), ""), 400, CodeInvalidScope, ""}}
		},
		"jti replay refused": func(f *exchangeFixture) []try {
			a := sign(t, rs, f.active.priv, f.active.id, nil)
			return []try{{grantForm(a, ""), 200, "", "a b c"}, {grantForm(a, ""), 400, CodeInvalidGrant, ""}}
		},
		"client assertion without jti": func(f *exchangeFixture) []try {
			a := sign(t, rs, f.active.priv, f.active.id, func(c jwt.MapClaims) { delete(c, "jti"); c["sub"] = "team/app" })
			form := url.Values{"grant_type": {GrantTypeClientCreds}, "client_assertion_type": {ClientAssertionJWTURN}, "client_assertion": {a}}
			return []try{{form, 401, CodeInvalidClient, ""}}
		},
		"form scope narrows the claim": func(f *exchangeFixture) []try {
			return []try{{grantForm(sign(t, rs, f.active.priv, f.active.id, withScope("a b")), "b"), 200, "", "b"}}
		},
		"form scope cannot widen the claim": func(f *exchangeFixture) []try {
			return []try{{grantForm(sign(t, rs, f.active.priv, f.active.id, withScope("a")), "a c"), 400, CodeInvalidScope, ""}}
		},
		"form scope alone": func(f *exchangeFixture) []try {
			return []try{{grantForm(sign(t, rs, f.active.priv, f.active.id, nil), "c"), 200, "", "c"}}
		},
	}
	for name, steps := range cases {
		t.Run(name, func(t *testing.T) {
			f := newExchangeFixture(t)
			for i, s := range steps(f) {
				r := f.post(t, s.form)
				if r.status != s.status || r.code != s.code || (s.status == 200 && r.scope != s.scope) {
					t.Fatalf("step %d: %d %s %q scope %q; want %d %s scope %q", i, r.status, r.code, r.description, r.scope, s.status, s.code, s.scope)
				}
			}
		})
	}
}

// TestTokenRecordsTheKeyThatVerified: a grant without kid yields a token naming the
// key that verified it, so introspection can retire it with that key.
func TestTokenRecordsTheKeyThatVerified(t *testing.T) {
	f := newExchangeFixture(t)
	for _, k := range []keyPair{f.active, f.second} {
		r := f.post(t, grantForm(sign(t, jwt.SigningMethodRS256, k.priv, "", func(c jwt.MapClaims) { c["jti"] = k.id }), ""))
		if r.status != 200 || r.keyID != k.id {
			t.Errorf("grant signed by %s without kid: %d, token key_id %q", k.id, r.status, r.keyID)
		}
	}
}

// TestNoSigningKeysYet: a valid grant before the signing keys load gets 503
// temporarily_unavailable with Retry-After, and its jti is not spent.
func TestNoSigningKeysYet(t *testing.T) {
	f := newExchangeFixture(t)
	f.loaded.Store(false)
	a := sign(t, jwt.SigningMethodRS256, f.active.priv, f.active.id, nil)
	r := f.post(t, grantForm(a, ""))
	if r.status != http.StatusServiceUnavailable || r.code != CodeTemporarilyUnavailable || r.retryAfter != "1" {
		t.Fatalf("before the keys: %d %s Retry-After %q; want 503 temporarily_unavailable, Retry-After 1", r.status, r.code, r.retryAfter)
	}
	f.loaded.Store(true)
	if r := f.post(t, grantForm(a, "")); r.status != 200 {
		t.Fatalf("the same grant once the keys loaded: %d %s %s", r.status, r.code, r.description)
	}
}
