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
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// KeyGenerator makes key pairs. It is an interface so tests can inject randomness and
// a benchmark can time generation alone.
type KeyGenerator interface {
	New(bits int32, encoding v1.PrivateKeyEncoding) (*NewKey, error)
}

// RSAKeys generates RSA key pairs from crypto/rand. Since Go 1.26 the reader given to
// rsa.GenerateKey is ignored and the secure source is always used; tests that need
// deterministic keys call testing/cryptotest.SetGlobalRandom, and tests that need
// other keys inject their own KeyGenerator.
type RSAKeys struct{}

// New generates an RSA key of the given size and PEM-encodes it.
func (RSAKeys) New(bits int32, encoding v1.PrivateKeyEncoding) (*NewKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, int(bits))
	if err != nil {
		return nil, fmt.Errorf("generate %d-bit RSA key: %w", bits, err)
	}
	pem, err := keyutil.EncodePrivateKey(key, encoding)
	if err != nil {
		return nil, err
	}
	return &NewKey{Key: key, PEM: pem}, nil
}

// MaxLogVerbosity is the most verbose log level (V(n)) the binaries allow. client-go
// logs request and response bodies from V(8) on, and a key Secret's body is its
// private key, so anything above 7 is clamped (see main.go).
const MaxLogVerbosity = 7

// RandomSecret is a client secret: 256 random bits, base64url.
func RandomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
