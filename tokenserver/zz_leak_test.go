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
	"strings"
	"testing"
)

// TestNoSecretsInLogs runs last (file order): the token server's logs, audit lines
// included, never contain an assertion, an access token or key material. JWTs are
// recognised by their base64url-encoded '{"' header prefix.
func TestNoSecretsInLogs(t *testing.T) {
	text := logs.String()
	if !strings.Contains(text, `"token request"`) && !strings.Contains(text, "token request") {
		t.Fatal("no audit lines were captured; the check would prove nothing")
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
