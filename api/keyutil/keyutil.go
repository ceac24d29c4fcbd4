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

// Package keyutil holds the small pure helpers that the controller, the token server
// and the client share: key IDs, PEM encoding and the key file layout. Keeping them in
// one place guarantees that the key ID the controller publishes is the one the token
// server looks up and the one clients put in their `kid` header.
package keyutil

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// PEM block types.
const (
	pemPKCS1      = "RSA PRIVATE KEY"
	pemPKCS8      = "PRIVATE KEY"
	pemPublicSPKI = "PUBLIC KEY"
)

// KeyID is the RFC 7638 JWK thumbprint of an RSA public key: the base64url (no
// padding) SHA-256 of the canonical JWK {"e","kty","n"}. A thumbprint names the key by
// its content, so the same key always gets the same ID and no registry is needed.
// go-jose computes the canonical form (RFC 7638 §3.2).
func KeyID(pub *rsa.PublicKey) (string, error) {
	if pub == nil || pub.N == nil {
		return "", errors.New("key ID of an empty RSA public key")
	}
	sum, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("RFC 7638 thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// EncodePrivateKey PEM-encodes an RSA private key as PKCS #1 or PKCS #8.
func EncodePrivateKey(key *rsa.PrivateKey, encoding v1.PrivateKeyEncoding) ([]byte, error) {
	switch encoding {
	case v1.PKCS1, "":
		return pem.EncodeToMemory(&pem.Block{Type: pemPKCS1, Bytes: x509.MarshalPKCS1PrivateKey(key)}), nil
	case v1.PKCS8:
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("marshal PKCS #8 private key: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: pemPKCS8, Bytes: der}), nil
	default:
		return nil, fmt.Errorf("unknown private key encoding %q", encoding)
	}
}

// ParsePrivateKey reads an RSA private key from PEM, PKCS #1 or PKCS #8, and reports
// which encoding it was in. Errors never quote the input: it is secret.
func ParsePrivateKey(data []byte) (*rsa.PrivateKey, v1.PrivateKeyEncoding, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("no PEM block found in private key")
	}
	switch block.Type {
	case pemPKCS1:
		key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, "", errors.New("malformed PKCS #1 RSA private key")
		}
		return key, v1.PKCS1, nil
	case pemPKCS8:
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, "", errors.New("malformed PKCS #8 private key")
		}
		key, ok := parsed.(*rsa.PrivateKey)
		if !ok {
			return nil, "", fmt.Errorf("PKCS #8 private key is %T, not RSA", parsed)
		}
		return key, v1.PKCS8, nil
	default:
		return nil, "", fmt.Errorf("PEM block %q is not an RSA private key", block.Type)
	}
}

// EncodePublicKey PEM-encodes a public key as SubjectPublicKeyInfo ("PUBLIC KEY"), the
// form openssl, Java and every JOSE library read.
func EncodePublicKey(pub *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("marshal public key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: pemPublicSPKI, Bytes: der})), nil
}

// ParsePublicKey reads an RSA public key from a PEM SubjectPublicKeyInfo block.
func ParsePublicKey(data []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemPublicSPKI {
		return nil, errors.New(`no "PUBLIC KEY" PEM block found`)
	}
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	pub, ok := parsed.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, not RSA", parsed)
	}
	return pub, nil
}
