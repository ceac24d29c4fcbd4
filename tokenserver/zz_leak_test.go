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
	"net/url"
	"strings"
	"sync"
	"testing"

	gojwt "github.com/golang-jwt/jwt/v5"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

// issuedSecrets are refresh tokens and client secrets the tests were given, for
// TestNoSecretsInLogs to look for verbatim.
type issuedSecrets struct {
	mu   sync.Mutex
	list []string
}

var issued issuedSecrets

func (s *issuedSecrets) add(secret string) {
	if secret != "" {
		s.mu.Lock()
		s.list = append(s.list, secret)
		s.mu.Unlock()
	}
}

// TestNoSecretsInLogs: after a grant issued and a grant refused here (and, as it runs
// last in file order, whatever the other tests did), the token server's logs, audit
// lines included, never contain an assertion, an access token, key material, or any
// refresh token or client secret the tests were given. JWTs are recognised by their
// base64url-encoded '{"' header prefix.
func TestNoSecretsInLogs(t *testing.T) {
	kf := readyKey(t, "leak-check", v1.ServiceKeySpec{})
	if r := grant(t, kf); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	if r := postForm(t, url.Values{"grant_type": {tokenserver.GrantTypeJWTBearer}, "assertion": {signAssertion(t, kf, func(c gojwt.MapClaims) { c["aud"] = "elsewhere" })}}); r.status != 400 {
		t.Fatalf("a grant for another audience: %d %s", r.status, r.body)
	}
	text := logs.String()
	if !strings.Contains(text, `"token request"`) && !strings.Contains(text, "token request") {
		t.Fatal("no audit lines were captured; the check would prove nothing")
	}
	issued.mu.Lock()
	defer issued.mu.Unlock()
	if len(issued.list) == 0 {
		t.Log("no refresh token or client secret was issued before this test (run alone?)")
	}
	for _, secret := range issued.list {
		if strings.Contains(text, secret) {
			t.Errorf("the logs contain a refresh token or client secret a test was given")
		}
	}
	for _, needle := range []string{"eyJ", "PRIVATE KEY", "BEGIN"} {
		if strings.Contains(text, needle) {
			t.Errorf("the logs contain %q", needle)
		}
	}
	if !strings.Contains(text, "client_addr") || !strings.Contains(text, "outcome") {
		t.Error("audit lines lack client_addr or outcome")
	}
}
