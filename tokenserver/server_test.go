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

// TestInFlightBound: beyond MaxInFlight requests being answered, the next one is shed
// at once with 503 temporarily_unavailable and Retry-After, and served again once a
// slot frees up.
func TestInFlightBound(t *testing.T) {
	s := NewServer("https://t", "https://t/oauth2/token", &TokenHandler{Exchanger: &Exchanger{}, Log: logr.Discard()}, func() bool { return true }, logr.Discard())
	s.MaxInFlight = 1
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	body, hold := io.Pipe() // the first request's body never ends: it holds its slot
	done := make(chan int)
	go func() {
		resp, err := http.Post(srv.URL+"/oauth2/token", "application/x-www-form-urlencoded", body)
		if err != nil {
			done <- 0
			return
		}
		_ = resp.Body.Close()
		done <- resp.StatusCode
	}()
	_, _ = hold.Write([]byte("grant_type="))
	deadline := time.Now().Add(30 * time.Second)
	for s.InFlight() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the first request never arrived")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, err := http.PostForm(srv.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(data), CodeTemporarilyUnavailable) {
		t.Errorf("beyond the bound: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), data)
	}
	_ = hold.Close()
	if status := <-done; status != http.StatusBadRequest {
		t.Errorf("the held request: %d, want 400 (no grant_type)", status)
	}
	resp, err = http.PostForm(srv.URL+"/oauth2/token", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("after the slot freed: %d, want 400", resp.StatusCode)
	}
}
