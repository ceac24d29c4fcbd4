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
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/servicekey-operator/servicekey-operator/verifier"
)

// FuzzVerifier sends arbitrary Authorization headers through the middleware: every
// answer is one of RFC 6750's, and only the one valid token is admitted.
func FuzzVerifier(f *testing.F) {
	ks := &keyServer{}
	a := startKeys(f, ks)
	v := newVerifier(f, ks, verifier.Options{MaxKeyWait: 1})
	h := v.Require("read")(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	goodToken := mint(f, a, jwt.SigningMethodES256, "a", "at+jwt", nil, ks.srv.URL)
	good := "Bearer " + goodToken
	f.Add(good)
	f.Add("Bearer " + mint(f, a, jwt.SigningMethodES256, "b", "at+jwt", nil, ks.srv.URL))
	f.Add("Bearer " + mint(f, a, jwt.SigningMethodES256, "a", "JWT", func(c jwt.MapClaims) { c["_h_jku"] = "x" }, ks.srv.URL))
	f.Add("Bearer a.b.c")
	f.Add("Basic YTpi")
	f.Add("")
	f.Fuzz(func(t *testing.T, authorization string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header["Authorization"] = []string{authorization}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !slices.Contains([]int{http.StatusNoContent, 400, 401, 403}, rec.Code) {
			t.Fatalf("status %d", rec.Code)
		}
		if _, tok, _ := strings.Cut(authorization, " "); rec.Code == http.StatusNoContent && tok != goodToken {
			t.Fatalf("admitted a token other than the one valid token")
		}
	})
}
