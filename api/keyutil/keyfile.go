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

package keyutil

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// KeyFile is the `key.json` a workload mounts. Its field names are those of
// ftw.tokenauth's service key files, so clients written for that flow read it as is.
// Fields may be added; none will be renamed.
type KeyFile struct {
	// KeyID is the `kid` to put in grant headers.
	KeyID string `json:"key_id"`
	// ClientID is the grant's `iss` (`<namespace>/<name>`).
	ClientID string `json:"client_id"`
	// UserID is the subject the key speaks for, the grant's optional `sub`.
	UserID string `json:"user_id"`
	// Issued is when the key pair was generated (RFC 3339).
	Issued string `json:"issued"`
	// TokenURI is the token endpoint to POST grants to, and the grant's `aud`.
	TokenURI string `json:"token_uri"`
	// PrivateKey is the PEM-encoded RSA private key.
	PrivateKey string `json:"private_key"`
}

// Marshal encodes the key file as indented JSON.
func (k KeyFile) Marshal() ([]byte, error) {
	data, err := json.MarshalIndent(k, "", "  ") //nolint:gosec // G117: this is the key file itself; it goes only into the Secret
	if err != nil {
		return nil, fmt.Errorf("encode key file: %w", err)
	}
	return append(data, '\n'), nil
}

// ParseKeyFile decodes a key file and checks that the fields a client needs are there.
// Errors name fields, never their values.
func ParseKeyFile(data []byte) (KeyFile, error) {
	var k KeyFile
	if err := json.Unmarshal(data, &k); err != nil {
		return KeyFile{}, errors.New("key file is not valid JSON")
	}
	required := []struct{ field, value string }{
		{"key_id", k.KeyID}, {"client_id", k.ClientID}, {"private_key", k.PrivateKey},
	}
	for _, r := range required {
		if r.value == "" {
			return KeyFile{}, fmt.Errorf("key file has no %s", r.field)
		}
	}
	return k, nil
}

// Data keys of the token server's signing-key Secret, written by the controller and
// read by the token server. The key in SigningCurrent signs; SigningNext is published
// in the JWKS a full rotation period before it signs, so resource servers know it in
// advance; SigningPrevious stays published until the tokens it signed have expired.
const (
	SigningCurrent  = "current.pem"
	SigningNext     = "next.pem"
	SigningPrevious = "previous.pem"
)

// HashClientSecret is the status form of a client secret: "sha256:" and the base64url
// SHA-256. A plain hash suffices because secrets are 256 random bits, not passwords.
func HashClientSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// ClientSecretMatches compares a presented secret with a status hash in constant time.
func ClientSecretMatches(secret, hash string) bool {
	if hash == "" || secret == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(HashClientSecret(secret)), []byte(hash)) == 1
}
