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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
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

// TestSigningSecretDeleted: a delete of the signing-key Secret, delivered as the object
// or as a tombstone, drops the keys at once (nothing signs, the JWKS says 503; /readyz
// stays 200 so the replicas stay in their Service, and says why), and the next Secret
// brings keys back.
func TestSigningSecretDeleted(t *testing.T) {
	secret := func() *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "sys", Name: "signing"}, Data: map[string][]byte{SigningCurrent: ecPEM(t)}}
	}
	cases := map[string]func(*corev1.Secret) any{
		"object":                  func(s *corev1.Secret) any { return s },
		"tombstone":               func(s *corev1.Secret) any { return toolscache.DeletedFinalStateUnknown{Key: "sys/signing", Obj: s} },
		"tombstone without state": func(*corev1.Secret) any { return toolscache.DeletedFinalStateUnknown{Key: "sys/signing"} },
	}
	for name, deleted := range cases {
		t.Run(name, func(t *testing.T) {
			s := NewServer("https://t", "https://t/oauth2/token", &TokenHandler{Exchanger: &Exchanger{}}, func() bool { return true }, logr.Discard())
			h := s.SigningSecretHandler()
			first := secret()
			h.OnAdd(first, true)
			if s.SigningKeys() == nil {
				t.Fatal("keys not loaded")
			}
			h.OnDelete(deleted(first))
			if s.SigningKeys() != nil {
				t.Fatal("the keys of the deleted Secret are still in use")
			}
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			if code, body := testenv.HTTPGet(srv.URL + "/readyz"); code != http.StatusOK || !strings.Contains(body, "deleted") {
				t.Errorf("/readyz after the delete: %d %q", code, body)
			}
			if code, _ := testenv.HTTPGet(srv.URL + "/.well-known/jwks.json"); code != http.StatusServiceUnavailable {
				t.Errorf("JWKS after the delete: %d, want 503", code)
			}
			h.OnAdd(secret(), false)
			if ks := s.SigningKeys(); ks == nil || !s.Ready() {
				t.Fatal("a new Secret did not bring keys back")
			}
			if code, _ := testenv.HTTPGet(srv.URL + "/readyz"); code != http.StatusOK {
				t.Errorf("/readyz with the new keys: %d", code)
			}
		})
	}
}

// blockingLookup holds every request that looks a client up until released.
type blockingLookup struct{ entered, release chan struct{} }

func (b blockingLookup) Record(string) (*KeyRecord, bool) {
	select {
	case b.entered <- struct{}{}:
		<-b.release
	default: // a lookup nobody waits for (a second grant) is not held
	}
	return nil, false
}

// TestInFlightBound: beyond the bound of requests being judged, the next one is shed
// at once with 503 temporarily_unavailable and Retry-After, and served again once a
// slot frees up. A sender that trickles its body holds no slot.
func TestInFlightBound(t *testing.T) {
	lookup := blockingLookup{entered: make(chan struct{}), release: make(chan struct{})}
	th := &TokenHandler{Exchanger: &Exchanger{Policy: testPolicy, Lookup: lookup, Clock: clocktesting.NewFakeClock(now)}, Log: logr.Discard(), InFlight: NewInFlight(1)}
	srv := httptest.NewServer(th)
	defer srv.Close()
	post := func(body io.Reader) int {
		resp, err := http.Post(srv.URL, "application/x-www-form-urlencoded", body)
		if err != nil {
			t.Error(err)
			return 0
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "1" {
			t.Errorf("503 without Retry-After: 1")
		}
		return resp.StatusCode
	}
	// A slow sender: its body never ends, and it holds no slot meanwhile.
	slow, hold := io.Pipe()
	slowDone := make(chan int)
	go func() { slowDone <- post(slow) }()
	_, _ = hold.Write([]byte("grant_type=")) // returns once the server reads the body
	defer func() {
		_ = hold.Close()
		<-slowDone
	}()
	k := newPair(t)
	grant := strings.NewReader(url.Values{"grant_type": {GrantTypeJWTBearer}, "assertion": {sign(t, jwt.SigningMethodRS256, k.priv, k.id, nil)}}.Encode())
	done := make(chan int)
	go func() { done <- post(grant) }()
	select { // the grant is being judged: it holds the one slot
	case <-lookup.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the grant never reached the lookup: a slot was held by the slow sender, or none was free")
	}
	if th.InFlight.Len() != 1 {
		t.Fatalf("%d slots taken, want 1 (the slow sender must hold none)", th.InFlight.Len())
	}
	if status := post(strings.NewReader("grant_type=client_credentials")); status != http.StatusServiceUnavailable {
		t.Errorf("beyond the bound: %d, want 503", status)
	}
	close(lookup.release)
	if status := <-done; status != http.StatusBadRequest {
		t.Errorf("the judged grant: %d, want 400 (unknown client)", status)
	}
	if status := post(strings.NewReader("grant_type=client_credentials")); status != http.StatusUnauthorized {
		t.Errorf("after the slot freed: %d, want 401", status)
	}
}
