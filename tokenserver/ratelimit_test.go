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
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/golang-jwt/jwt/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// openGate permits every ServiceKey's scopes and audiences in the given namespaces.
func openGate(namespaces ...string) *PolicyGate {
	g := NewPolicyGate()
	g.PolicyHandler().OnAdd(testenv.OpenPolicy("open", nil), true)
	for _, ns := range namespaces {
		g.NamespaceHandler().OnAdd(namespace(ns, nil), true)
	}
	return g
}

// namespace is a namespace as the metadata informer delivers it.
func namespace(name string, labels map[string]string) *metav1.PartialObjectMetadata {
	m := policy.Namespace()
	m.Name, m.Labels = name, labels
	return m
}

// TestRateLimitOverHTTP: past the per-client budget the endpoint answers 429 with
// Retry-After, and another client is unaffected.
func TestRateLimitOverHTTP(t *testing.T) {
	a, b := newPair(t), newPair(t)
	lookup := mapLookup{
		"team/app": {ClientID: "team/app", Subject: "system:servicekey:team:app", Request: policy.Request{Namespace: "team", Name: "app"},
			Keys: []PublicKey{{ID: a.id, Key: &a.priv.PublicKey, Active: true}}},
		"team/other": {ClientID: "team/other", Subject: "system:servicekey:team:other", Request: policy.Request{Namespace: "team", Name: "other"},
			Keys: []PublicKey{{ID: b.id, Key: &b.priv.PublicKey, Active: true}}},
	}
	keys, err := LoadSigningKeys(map[string][]byte{SigningCurrent: ecPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	x := &Exchanger{Issuer: "https://token.test", MaxTTL: time.Hour, Policy: testPolicy, Lookup: lookup,
		Keys: func() *SigningKeys { return keys }, State: NewMemoryState(NewReplayCache(100, 100), NewLimiter(1, 2), 10),
		Clock: clocktesting.NewFakeClock(now), NewID: func() string { return "id" }, Policies: openGate("team")}
	srv := httptest.NewServer(&TokenHandler{Exchanger: x, Log: logr.Discard()})
	defer srv.Close()
	type result struct {
		StatusCode int
		Header     http.Header
	}
	post := func(p keyPair, iss string, n int) result {
		a := sign(t, jwt.SigningMethodRS256, p.priv, p.id, func(c jwt.MapClaims) {
			c["iss"], c["sub"], c["jti"] = iss, "system:servicekey:"+strings.ReplaceAll(iss, "/", ":"), "j"+string(rune('a'+n))
		})
		resp, err := http.PostForm(srv.URL, url.Values{"grant_type": {GrantTypeJWTBearer}, "assertion": {a}})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return result{resp.StatusCode, resp.Header}
	}
	for i := 0; i < 2; i++ {
		if r := post(a, "team/app", i); r.StatusCode != 200 {
			t.Fatalf("request %d within the burst: %d", i, r.StatusCode)
		}
	}
	r := post(a, "team/app", 2)
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "1" {
		t.Errorf("over the budget: %d, Retry-After %q; want 429 and 1", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if r := post(b, "team/other", 3); r.StatusCode != 200 {
		t.Errorf("another client was limited too: %d", r.StatusCode)
	}
}

// TestDeletedServiceKeyIsForgotten: the index's delete event drops the client's rate
// bucket and lastUsedTime bookkeeping, so they do not grow with every ServiceKey ever
// seen, and only that client's.
func TestDeletedServiceKeyIsForgotten(t *testing.T) {
	clk := clocktesting.NewFakeClock(now)
	lim := NewLimiter(1, 1)
	used := NewLastUsed(nil, time.Hour, clk, logr.Discard())
	ix := NewIndex(logr.Discard())
	ix.OnDelete(lim.Forget, used.Forget)
	for _, id := range []string{"team/app", "team/other"} {
		lim.Allow(id, now)
		used.Note(id)
	}
	if ok, _ := lim.Allow("team/app", now); ok {
		t.Fatal("the burst of 1 was not spent")
	}
	ix.Handler().OnDelete(&v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "app"}})
	if len(lim.clients) != 1 || len(used.written) != 1 {
		t.Errorf("after the delete: %d buckets, %d lastUsed entries; want 1 each (team/other's)", len(lim.clients), len(used.written))
	}
	if ok, _ := lim.Allow("team/app", now); !ok {
		t.Error("a ServiceKey recreated under the same name starts with a spent budget")
	}
}
