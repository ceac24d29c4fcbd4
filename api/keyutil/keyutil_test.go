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

package keyutil_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// rfc7638Modulus is the RSA modulus of the example key in RFC 7638 §3.1 (the key of
// RFC 7517 Appendix A.1); its SHA-256 thumbprint is given in the RFC.
const rfc7638Modulus = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"

func TestKeyIDKnownVector(t *testing.T) {
	n, err := base64.RawURLEncoding.DecodeString(rfc7638Modulus)
	if err != nil {
		t.Fatal(err)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	got, err := keyutil.KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Errorf("KeyID = %s, want the RFC 7638 §3.1 thumbprint %s", got, want)
	}
}

func TestPrivateKeyRoundTrip(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		encoding  v1.PrivateKeyEncoding
		pemHeader string
	}{
		"PKCS1": {v1.PKCS1, "-----BEGIN RSA PRIVATE KEY-----"},
		"PKCS8": {v1.PKCS8, "-----BEGIN PRIVATE KEY-----"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			data, err := keyutil.EncodePrivateKey(key, tc.encoding)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(data), tc.pemHeader) {
				t.Errorf("PEM starts %q, want %q", strings.SplitN(string(data), "\n", 2)[0], tc.pemHeader)
			}
			back, enc, err := keyutil.ParsePrivateKey(data)
			if err != nil {
				t.Fatal(err)
			}
			if enc != tc.encoding || !back.Equal(key) {
				t.Errorf("round trip: encoding %s, equal %v", enc, back.Equal(key))
			}
		})
	}
}

func TestParsePrivateKeyErrorsDoNotQuoteInput(t *testing.T) {
	secretish := "c2VjcmV0LW1hdGVyaWFs"
	cases := map[string]struct {
		input string
		want  string
	}{
		"not PEM":        {secretish, "no PEM block"},
		"garbage PKCS1":  {"-----BEGIN RSA PRIVATE KEY-----\n" + secretish + "\n-----END RSA PRIVATE KEY-----\n", "malformed PKCS #1"},
		"garbage PKCS8":  {"-----BEGIN PRIVATE KEY-----\n" + secretish + "\n-----END PRIVATE KEY-----\n", "malformed PKCS #8"},
		"wrong PEM type": {"-----BEGIN CERTIFICATE-----\n" + secretish + "\n-----END CERTIFICATE-----\n", "is not an RSA private key"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := keyutil.ParsePrivateKey([]byte(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secretish) {
				t.Errorf("error quotes the key material: %v", err)
			}
		})
	}
}

// TestGrantSignedWithSecretKeyVerifiesWithStatusKey checks the contract between the
// Secret and the status with a real JWT library: a grant signed with the private key
// PEM, carrying the key ID, verifies against the published public key PEM.
func TestGrantSignedWithSecretKeyVerifiesWithStatusKey(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := keyutil.EncodePrivateKey(key, v1.PKCS8)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := keyutil.EncodePublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := keyutil.KeyID(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jwt.ParseRSAPrivateKeyFromPEM(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": "default/demo", "exp": time.Now().Add(time.Minute).Unix(),
	})
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(signer)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.Parse(signed, func(tk *jwt.Token) (any, error) {
		if tk.Header["kid"] != kid {
			t.Errorf("kid %v, want %s", tk.Header["kid"], kid)
		}
		return keyutil.ParsePublicKey([]byte(pubPEM))
	}, jwt.WithValidMethods([]string{"RS256"}))
	if err != nil || !parsed.Valid {
		t.Fatalf("grant does not verify with the published key: %v", err)
	}
}

func TestParseKeyFile(t *testing.T) {
	full := keyutil.KeyFile{KeyID: "k", ClientID: "ns/n", UserID: "u", Issued: "2026-01-01T00:00:00Z", TokenURI: "https://t", PrivateKey: "pem"}
	data, err := full.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		input   string
		wantErr string
	}{
		"complete":       {string(data), ""},
		"not JSON":       {"{", "not valid JSON"},
		"no key_id":      {`{"client_id":"a","private_key":"b"}`, "no key_id"},
		"no client_id":   {`{"key_id":"a","private_key":"b"}`, "no client_id"},
		"no private_key": {`{"key_id":"a","client_id":"b"}`, "no private_key"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := keyutil.ParseKeyFile([]byte(tc.input))
			if tc.wantErr == "" {
				if err != nil || got != full {
					t.Fatalf("got %+v, %v; want %+v", got, err, full)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}
