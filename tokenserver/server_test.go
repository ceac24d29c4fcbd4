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
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-logr/logr"
)

func TestReadyz(t *testing.T) {
	keys, err := LoadSigningKeys(map[string][]byte{SigningCurrent: ecPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		synced, keys bool
		want         int
	}{
		"nothing yet":           {false, false, http.StatusServiceUnavailable},
		"cache synced, no key":  {true, false, http.StatusServiceUnavailable},
		"key, cache not synced": {false, true, http.StatusServiceUnavailable},
		"ready":                 {true, true, http.StatusOK},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := NewServer("https://t", "https://t/oauth2/token", &TokenHandler{Exchanger: &Exchanger{}}, func() bool { return tc.synced }, logr.Discard())
			if tc.keys {
				s.SetSigningKeys(keys)
			}
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			for _, path := range []string{"/readyz", "/.well-known/jwks.json"} {
				resp, err := http.Get(srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				want := tc.want
				if path != "/readyz" && tc.keys {
					want = http.StatusOK // the JWKS needs only the keys
				}
				if resp.StatusCode != want {
					t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
				}
			}
		})
	}
}
