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
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
)

// Data keys of the signing-key Secret (see keyutil): current signs; next and previous
// are published in the JWKS only.
const (
	SigningCurrent  = keyutil.SigningCurrent
	SigningNext     = keyutil.SigningNext
	SigningPrevious = keyutil.SigningPrevious
)

// SigningKey is one server signing key.
type SigningKey struct {
	ID     string
	Alg    string
	signer crypto.Signer
}

// SigningKeys are the server's keys as loaded from the signing-key Secret.
type SigningKeys struct {
	Current  *SigningKey
	Others   []*SigningKey // next and previous: published, never used to sign
	jwksJSON []byte
}

// LoadSigningKeys parses the signing-key Secret's data. `current.pem` is required;
// `next.pem` and `previous.pem` are optional. The JWKS document is built once here, so
// serving it costs nothing.
func LoadSigningKeys(data map[string][]byte) (*SigningKeys, error) {
	if len(data[SigningCurrent]) == 0 {
		return nil, errors.New("the signing-key Secret has no " + SigningCurrent)
	}
	ks := &SigningKeys{}
	var set jose.JSONWebKeySet
	for _, name := range []string{SigningCurrent, SigningNext, SigningPrevious} {
		if len(data[name]) == 0 {
			continue
		}
		k, err := parseSigningKey(data[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if name == SigningCurrent {
			ks.Current = k
		} else {
			ks.Others = append(ks.Others, k)
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.signer.Public(), KeyID: k.ID, Algorithm: k.Alg, Use: "sig"})
	}
	doc, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("encode JWKS: %w", err)
	}
	ks.jwksJSON = doc
	return ks, nil
}

// JWKS is the RFC 7517 JSON Web Key Set of every published key.
func (ks *SigningKeys) JWKS() []byte { return ks.jwksJSON }

// parseSigningKey reads a PKCS #8 (or SEC 1 / PKCS #1) PEM private key: P-256 ECDSA
// signs ES256, RSA signs RS256. The key ID is its RFC 7638 thumbprint.
func parseSigningKey(data []byte) (*SigningKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, errors.New("malformed private key")
	}
	k := &SigningKey{}
	switch key := key.(type) {
	case *ecdsa.PrivateKey:
		if key.Curve != elliptic.P256() {
			return nil, errors.New("ECDSA signing keys must use P-256 (ES256)")
		}
		k.signer, k.Alg = key, "ES256"
	case *rsa.PrivateKey:
		k.signer, k.Alg = key, "RS256"
	default:
		return nil, fmt.Errorf("unsupported signing key type %T", key)
	}
	sum, err := (&jose.JSONWebKey{Key: k.signer.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("key ID: %w", err)
	}
	k.ID = base64.RawURLEncoding.EncodeToString(sum)
	return k, nil
}

// Sign signs claims as an RFC 9068 access token: header `typ: at+jwt` (§2.1) and the
// `kid` of the current key.
func (ks *SigningKeys) Sign(claims jwt.Claims) (string, error) {
	method := jwt.GetSigningMethod(ks.Current.Alg)
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["typ"] = "at+jwt"
	tok.Header["kid"] = ks.Current.ID
	s, err := tok.SignedString(ks.Current.signer)
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	return s, nil
}

// Verify checks an access token this server issued: signature by a published key
// (current, next or previous, by kid), typ at+jwt, issuer, and expiry at now.
func (ks *SigningKeys) Verify(raw, issuer string, now time.Time) (*AccessTokenClaims, error) {
	claims := &AccessTokenClaims{}
	tok, err := jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		for _, k := range append([]*SigningKey{ks.Current}, ks.Others...) {
			if k.ID == kid {
				return k.signer.Public(), nil
			}
		}
		return nil, errors.New("unknown kid")
	}, jwt.WithValidMethods([]string{"ES256", "RS256"}), jwt.WithIssuer(issuer), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	if typ, _ := tok.Header["typ"].(string); typ != "at+jwt" {
		return nil, errors.New("access token: typ is not at+jwt")
	}
	return claims, nil
}
