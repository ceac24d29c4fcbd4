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

package controllers

import (
	"strings"
	"testing"
	"testing/cryptotest"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// TestRSAKeysRandomnessIsInjectable shows that key generation draws only from the
// process's cryptographic randomness, which a test can seed.
func TestRSAKeysRandomnessIsInjectable(t *testing.T) {
	gen := func(seed uint64) *NewKey {
		cryptotest.SetGlobalRandom(t, seed)
		k, err := RSAKeys{}.New(2048, v1.PKCS8)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	// The seeded stream is process-wide: a TLS handshake of the suite's manager that
	// draws from it between the two generations changes the second key. Such a draw
	// is rare and only at start-up, so a few attempts tell injection from its absence.
	var a, c *NewKey
	same := false
	for attempt := 0; attempt < 5 && !same; attempt++ {
		var b *NewKey
		a, b = gen(1), gen(1)
		same = a.Key.Equal(b.Key) && string(a.PEM) == string(b.PEM)
	}
	if !same {
		t.Error("the same seed gave different keys")
	}
	c = gen(2)
	if a.Key.Equal(c.Key) {
		t.Error("different seeds gave the same key")
	}
	if !strings.HasPrefix(string(a.PEM), "-----BEGIN PRIVATE KEY-----") || a.Key.N.BitLen() != 2048 {
		t.Errorf("key of %d bits, PEM %.30q", a.Key.N.BitLen(), a.PEM)
	}
}
