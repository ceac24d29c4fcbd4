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
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"time"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
)

// AnnotationSigningRotatedAt on the signing-key Secret is when its current key began
// to sign (RFC 3339).
const AnnotationSigningRotatedAt = "auth.servicekey.dev/rotated-at"

// SigningPolicy configures the token server's signing keys.
type SigningPolicy struct {
	// Algorithm is ES256 (P-256, the default) or RS256 (2048-bit RSA).
	Algorithm string
	// Every is the rotation period.
	Every time.Duration
	// MaxTokenTTL is the longest access-token lifetime: a previous key stays
	// published this long (plus a minute of skew) after it stopped signing.
	MaxTokenTTL time.Duration
}

// SigningPlan is what the signing-key Secret should hold.
type SigningPlan struct {
	Data      map[string][]byte
	RotatedAt time.Time
	// Changed says whether Data or RotatedAt differ from what was observed.
	Changed bool
	// Rotated says the current key changed (for the log).
	Rotated bool
	// RequeueAfter is when to look again.
	RequeueAfter time.Duration
}

// PlanSigningKeys decides the signing keys at now from the Secret's data and
// rotated-at time (zero when unknown), generating keys through gen:
//   - no current key: a current and a next key, rotated-at now;
//   - no next key: a next key;
//   - rotation due: previous <- current, current <- next, next <- new;
//   - previous older than the longest token: removed.
func PlanSigningKeys(data map[string][]byte, rotatedAt, now time.Time, p SigningPolicy, gen func() ([]byte, error)) (SigningPlan, error) {
	out := SigningPlan{Data: maps.Clone(data), RotatedAt: rotatedAt}
	if out.Data == nil {
		out.Data = map[string][]byte{}
	}
	newKey := func(name string) error {
		k, err := gen()
		if err != nil {
			return fmt.Errorf("generate signing key: %w", err)
		}
		out.Data[name], out.Changed = k, true
		return nil
	}
	switch {
	case len(out.Data[keyutil.SigningCurrent]) == 0:
		delete(out.Data, keyutil.SigningPrevious)
		if err := newKey(keyutil.SigningCurrent); err != nil {
			return out, err
		}
		out.RotatedAt, out.Rotated = now, true
	case rotatedAt.IsZero():
		out.RotatedAt, out.Changed = now, true
	case !now.Before(rotatedAt.Add(p.Every)) && len(out.Data[keyutil.SigningNext]) > 0:
		out.Data[keyutil.SigningPrevious] = out.Data[keyutil.SigningCurrent]
		out.Data[keyutil.SigningCurrent] = out.Data[keyutil.SigningNext]
		delete(out.Data, keyutil.SigningNext)
		out.RotatedAt, out.Changed, out.Rotated = now, true, true
	}
	if len(out.Data[keyutil.SigningNext]) == 0 {
		if err := newKey(keyutil.SigningNext); err != nil {
			return out, err
		}
	}
	dropPrevious := out.RotatedAt.Add(p.MaxTokenTTL + time.Minute)
	if _, ok := out.Data[keyutil.SigningPrevious]; ok && !now.Before(dropPrevious) {
		delete(out.Data, keyutil.SigningPrevious)
		out.Changed = true
	}
	out.RequeueAfter = out.RotatedAt.Add(p.Every).Sub(now)
	if _, ok := out.Data[keyutil.SigningPrevious]; ok && dropPrevious.Sub(now) < out.RequeueAfter {
		out.RequeueAfter = dropPrevious.Sub(now)
	}
	return out, nil
}

// NewSigningKeyPEM generates a signing key as PKCS #8 PEM.
func NewSigningKeyPEM(algorithm string) ([]byte, error) {
	var key any
	var err error
	switch algorithm {
	case "ES256", "":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RS256":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("unsupported signing algorithm %q (ES256 or RS256)", algorithm)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", algorithm, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal signing key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
