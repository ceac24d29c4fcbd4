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
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

type introspection struct {
	status int
	body   tokenserver.IntrospectionResponse
	raw    string
}

func introspect(t *testing.T, callerToken, token string) introspection {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, baseURL+"/oauth2/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if callerToken != "" {
		req.Header.Set("Authorization", "Bearer "+callerToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out introspection
	out.status = resp.StatusCode
	var raw json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&raw)
	out.raw = string(raw)
	_ = json.Unmarshal(raw, &out.body)
	return out
}

func TestIntrospection(t *testing.T) {
	// An introspector of the server's default audience, which the target's tokens carry.
	caller := accessToken(t, readyKey(t, "introspector", v1.ServiceKeySpec{Scopes: []string{tokenserver.DefaultIntrospectionScope + ":https://api.test"}}))
	noScope := accessToken(t, readyKey(t, "nosy", v1.ServiceKeySpec{}))
	targetKF := readyKey(t, "target", v1.ServiceKeySpec{Scopes: []string{"read"},
		Rotation: v1.RotationSpec{GracePeriod: &metav1.Duration{Duration: time.Second}}})
	target := accessToken(t, targetKF)
	// A resource server's introspection scope names the audience it serves; it learns
	// only about tokens addressed to it. The plain scope admits tokens addressed to the
	// caller itself (its client_id).
	billing := accessToken(t, readyKey(t, "billing-rs", v1.ServiceKeySpec{Scopes: []string{tokenserver.DefaultIntrospectionScope + ":https://billing.test"}}))
	forBilling := accessToken(t, readyKey(t, "billing-client", v1.ServiceKeySpec{Audiences: []string{"https://billing.test", "https://other.test"}}))
	self := accessToken(t, readyKey(t, "self-rs", v1.ServiceKeySpec{Scopes: []string{tokenserver.DefaultIntrospectionScope}}))
	forSelf := accessToken(t, readyKey(t, "self-client", v1.ServiceKeySpec{Audiences: []string{"apps/self-rs"}}))

	cases := map[string]struct {
		caller, token string
		status        int
		active        bool
	}{
		"active token":                {caller, target, 200, true},
		"garbage token":               {caller, "not-a-token", 200, false},
		"no caller token":             {"", target, 401, false},
		"caller without scope":        {noScope, target, 403, false},
		"caller token is garbage":     {"x.y.z", target, 401, false},
		"token for the caller":        {billing, forBilling, 200, true},
		"token for others":            {billing, target, 200, false},
		"another audience's token":    {caller, forBilling, 200, false},
		"token for the caller itself": {self, forSelf, 200, true},
		"plain scope, others' token":  {self, target, 200, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := introspect(t, tc.caller, tc.token)
			if got.status != tc.status || got.body.Active != tc.active {
				t.Fatalf("%d %s; want %d active=%v", got.status, got.raw, tc.status, tc.active)
			}
			if !tc.active && tc.status == 200 && got.raw != `{"active":false}` {
				t.Errorf("an inactive answer says more than active=false: %s", got.raw)
			}
			if tc.active && tc.token == target && (got.body.ClientID != "apps/target" || got.body.Scope != "read" || got.body.TokenType != "Bearer" || got.body.Exp == 0) {
				t.Errorf("active response %s", got.raw)
			}
		})
	}

	// Retiring the grant's key makes its tokens inactive once the grace period ends.
	patchKey(t, "target", func(sk *v1.ServiceKey) { sk.Annotations = map[string]string{v1.AnnotationRotate: "1"} })
	eventually(t, "token of the retired key inactive", func() (bool, string) {
		got := introspect(t, caller, target)
		return got.status == 200 && !got.body.Active, got.raw
	})
	// A token of the new key is active; deleting the ServiceKey makes it inactive.
	fresh := accessToken(t, waitKeyFile(t, "target", func(sk *v1.ServiceKey) bool {
		return sk.Status.Keys[0].State == v1.KeyActive && sk.Status.Keys[0].KeyID != targetKF.KeyID
	}))
	if got := introspect(t, caller, fresh); !got.body.Active {
		t.Fatalf("fresh token inactive: %s", got.raw)
	}
	if err := k8s.Delete(context.Background(), &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "target", Namespace: ns}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "token of the deleted ServiceKey inactive", func() (bool, string) {
		got := introspect(t, caller, fresh)
		return got.status == 200 && !got.body.Active, got.raw
	})
}
