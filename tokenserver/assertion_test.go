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
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
)

var (
	now        = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	testPolicy = AssertionPolicy{
		Audiences:   []string{"https://token.test/oauth2/token", "https://token.test"},
		MaxLifetime: time.Hour, Leeway: time.Minute,
	}
)

type mapLookup map[string]*KeyRecord

func (m mapLookup) Record(id string) (*KeyRecord, bool) { r, ok := m[id]; return r, ok }

type keyPair struct {
	priv *rsa.PrivateKey
	id   string
}

func newPair(t testing.TB) keyPair {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := keyutil.KeyID(&k.PublicKey)
	return keyPair{k, id}
}

// sign makes an assertion with claims changed by mutate, signed by key.
func sign(t testing.TB, method jwt.SigningMethod, key any, kid string, mutate func(jwt.MapClaims)) string {
	t.Helper()
	c := jwt.MapClaims{
		"iss": "team/app", "sub": "system:servicekey:team:app", "aud": "https://token.test/oauth2/token",
		"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "jti": "j1",
	}
	if mutate != nil {
		mutate(c)
	}
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyAssertion(t *testing.T) {
	active, retiring, retired, stranger := newPair(t), newPair(t), newPair(t), newPair(t)
	graceEnd, graceOver := now.Add(time.Hour), now.Add(-time.Second)
	rec := &KeyRecord{
		ClientID: "team/app", Subject: "system:servicekey:team:app",
		Keys: []PublicKey{
			{ID: active.id, Key: &active.priv.PublicKey, Active: true},
			{ID: retiring.id, Key: &retiring.priv.PublicKey, NotAfter: &graceEnd},
			{ID: retired.id, Key: &retired.priv.PublicKey, NotAfter: &graceOver},
		},
	}
	expired := now.Add(-time.Minute)
	lookup := mapLookup{
		"team/app":       rec,
		"team/suspended": {ClientID: "team/suspended", Suspended: true, Keys: rec.Keys},
		"team/expired":   {ClientID: "team/expired", Expiry: &expired, Keys: rec.Keys},
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&active.priv.PublicKey)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rs := jwt.SigningMethodRS256
	cases := map[string]struct {
		assertion string
		want      string // substring of the description; "" means accepted
	}{
		"valid, kid":                {sign(t, rs, active.priv, active.id, nil), ""},
		"valid, no kid":             {sign(t, rs, active.priv, "", nil), ""},
		"valid, PS256":              {sign(t, jwt.SigningMethodPS256, active.priv, active.id, nil), ""},
		"valid, issuer audience":    {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["aud"] = "https://token.test" }), ""},
		"valid, audience array":     {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["aud"] = []string{"x", "https://token.test"} }), ""},
		"valid, no sub":             {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { delete(c, "sub") }), ""},
		"valid, clock skew on iat":  {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["iat"] = now.Add(30 * time.Second).Unix() }), ""},
		"Retiring key within grace": {sign(t, rs, retiring.priv, retiring.id, nil), ""},
		"Retiring key, no kid":      {sign(t, rs, retiring.priv, "", nil), ""},
		"alg none":                  {sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, active.id, nil), "is signed with none; allowed: RS256"},
		"HS256 with the public key": {sign(t, jwt.SigningMethodHS256, pubDER, active.id, nil), "is signed with HS256"},
		"ES256":                     {sign(t, jwt.SigningMethodES256, ec, active.id, nil), "is signed with ES256"},
		"unknown kid":               {sign(t, rs, active.priv, "nope", nil), "kid nope is not a usable key"},
		"kid of another key":        {sign(t, rs, active.priv, retiring.id, nil), "signature does not verify"},
		"retired key":               {sign(t, rs, retired.priv, retired.id, nil), "is not a usable key"},
		"retired key, no kid":       {sign(t, rs, retired.priv, "", nil), "signature does not verify"},
		"stranger's key":            {sign(t, rs, stranger.priv, "", nil), "signature does not verify"},
		"no iss":                    {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { delete(c, "iss") }), "no iss claim"},
		"unknown iss":               {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["iss"] = "team/other" }), "unknown client_id team/other"},
		"suspended":                 {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["iss"] = "team/suspended" }), "is suspended"},
		"expired ServiceKey":        {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["iss"] = "team/expired" }), "has expired"},
		"sub mismatch":              {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["sub"] = "system:admin" }), "sub does not match"},
		"no aud":                    {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { delete(c, "aud") }), "no aud claim"},
		"wrong aud":                 {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["aud"] = "https://evil.test" }), "aud does not name this server"},
		"no exp":                    {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { delete(c, "exp") }), "no exp claim"},
		"expired":                   {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["exp"] = now.Add(-2 * time.Minute).Unix() }), "expired at"},
		"lifetime over 1h":          {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["exp"] = now.Add(2 * time.Hour).Unix() }), "lifetime (exp - iat) exceeds 1h0m0s"},
		"no iat":                    {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { delete(c, "iat") }), "no iat claim"},
		"iat in the future":         {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["iat"] = now.Add(5 * time.Minute).Unix() }), "iat is in the future"},
		"nbf in the future":         {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["nbf"] = now.Add(5 * time.Minute).Unix() }), "not valid before"},
		"exp not a number":          {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["exp"] = "tomorrow" }), "not a well-formed JWT"},
		"not a JWT":                 {"not-a-jwt", "not a well-formed JWT"},
		"empty":                     {"", "not a well-formed JWT"},
		"jti of 256 bytes":          {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["jti"] = strings.Repeat("j", 256) }), ""},
		"jti of 257 bytes":          {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["jti"] = strings.Repeat("j", 257) }), "jti is longer than 256 bytes"},
		"jti not a string":          {sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["jti"] = 7 }), "not a well-formed JWT"},
		"typ JWT":                   {signH(t, active, map[string]any{"typ": "JWT"}), ""},
		"typ application/jwt":       {signH(t, active, map[string]any{"typ": "application/JWT"}), ""},
		"typ at+jwt":                {signH(t, active, map[string]any{"typ": "at+jwt"}), "typ must be jwt"},
		"typ logout+jwt":            {signH(t, active, map[string]any{"typ": "logout+jwt"}), "typ must be jwt"},
		"typ not a string":          {signH(t, active, map[string]any{"typ": 1}), "typ must be jwt"},
		"jku":                       {signH(t, active, map[string]any{"jku": "https://evil.test/jwks"}), "has jku"},
		"x5u":                       {signH(t, active, map[string]any{"x5u": "https://evil.test/cert"}), "has x5u"},
		"jwk":                       {signH(t, active, map[string]any{"jwk": map[string]any{"kty": "RSA"}}), "has jwk"},
		"x5c":                       {signH(t, active, map[string]any{"x5c": []string{"MIIB"}}), "has x5c"},
		"crit":                      {signH(t, active, map[string]any{"crit": []string{"exp"}, "exp": 1}), "has crit"},
		"empty crit":                {signH(t, active, map[string]any{"crit": []string{}}), "has crit"},
		"b64 false":                 {signH(t, active, map[string]any{"b64": false}), "has b64"},
		"enc":                       {signH(t, active, map[string]any{"enc": "A128GCM"}), "has enc"},
		"zip":                       {signH(t, active, map[string]any{"zip": "DEF"}), "has zip"},
		"cty JWT":                   {signH(t, active, map[string]any{"cty": "JWT"}), "has cty"},
		"kid a number":              {signH(t, active, map[string]any{"kid": 1}), "kid is not a string"},
		"x5t is only a hint":        {signH(t, active, map[string]any{"x5t": "abc"}), ""},
		"unknown parameter ignored": {signH(t, active, map[string]any{"x-vendor": "v"}), ""},
		"invalid UTF-8 in claims": {signRaw(t, active, `{"alg":"RS256","kid":"`+active.id+`"}`,
			`{"iss":"team/app","aud":"https://token.test","iat":`+strconv.FormatInt(now.Unix(), 10)+`,"exp":`+strconv.FormatInt(now.Add(time.Minute).Unix(), 10)+`,"jti":"a`+"\xff"+`"}`), "not UTF-8"},
		"invalid UTF-8 in header": {signRaw(t, active, `{"alg":"RS256","kid":"`+active.id+`","x":"`+"\xfe"+`"}`,
			`{"iss":"team/app","aud":"https://token.test","iat":`+strconv.FormatInt(now.Unix(), 10)+`,"exp":`+strconv.FormatInt(now.Add(time.Minute).Unix(), 10)+`}`), "not UTF-8"},
		"signature re-encoded": {func() string {
			a := sign(t, rs, active.priv, active.id, nil)
			return a[:len(a)-1] + string(a[len(a)-1]+1) // same bytes under lax base64, not strict
		}(), "not a well-formed JWT"},
		"tampered payload": {func() string {
			p := strings.Split(sign(t, rs, active.priv, active.id, nil), ".")
			other := strings.Split(sign(t, rs, active.priv, active.id, func(c jwt.MapClaims) { c["sub"] = "x" }), ".")
			return p[0] + "." + other[1] + "." + p[2]
		}(), "signature does not verify"},
	}
	// Without kid the key that verified is found key by key and recorded.
	signedBy := map[string]string{"valid, kid": active.id, "valid, no kid": active.id, "Retiring key, no kid": retiring.id, "Retiring key within grace": retiring.id}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			v, err := VerifyAssertion(tc.assertion, now, testPolicy, lookup, CodeInvalidGrant)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if v.Record != rec {
					t.Errorf("verified against %s", v.Record.ClientID)
				}
				if want := signedBy[name]; want != "" && v.KeyID != want {
					t.Errorf("KeyID %q, want the key that signed, %q", v.KeyID, want)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			said := err.Description
			if err.Reason != "" { // refused before authentication: generic to the caller
				if err.Description != GenericAssertionRefusal || err.Cause == "" {
					t.Errorf("unauthenticated refusal told the caller %q (cause %q)", err.Description, err.Cause)
				}
				said = err.Reason
			}
			if err.Code != CodeInvalidGrant || err.Status != 400 || !strings.Contains(said, tc.want) {
				t.Errorf("got %s (%d) %q; want invalid_grant 400 containing %q", err.Code, err.Status, said, tc.want)
			}
			if tc.assertion != "" && strings.Contains(err.Description, tc.assertion) {
				t.Error("the description quotes the assertion")
			}
		})
	}
}

// signH signs a valid assertion with the active key and extra header parameters.
func signH(t testing.TB, k keyPair, header map[string]any) string {
	t.Helper()
	c := jwt.MapClaims{"iss": "team/app", "aud": "https://token.test/oauth2/token", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "jti": "h"}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = k.id
	for name, v := range header {
		tok.Header[name] = v
	}
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signRaw signs header and payload JSON exactly as given (bytes json.Marshal would
// never produce, such as invalid UTF-8).
func signRaw(t *testing.T, k keyPair, header, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodRS256.Sign(signed, k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + enc.EncodeToString(sig)
}

func TestVerifyClientAssertion(t *testing.T) {
	k := newPair(t)
	lookup := mapLookup{"team/app": {ClientID: "team/app", Subject: "system:servicekey:team:app",
		Keys: []PublicKey{{ID: k.id, Key: &k.priv.PublicKey, Active: true}}}}
	cases := map[string]struct {
		sub   any
		noJTI bool
		want  string
	}{
		"sub is the client_id":     {"team/app", false, ""},
		"sub is the key's subject": {"system:servicekey:team:app", false, "sub must be the client_id"},
		"no sub":                   {nil, false, "sub must be the client_id"},
		"no jti":                   {"team/app", true, "must have a jti claim"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := sign(t, jwt.SigningMethodRS256, k.priv, k.id, func(c jwt.MapClaims) {
				if tc.sub == nil {
					delete(c, "sub")
				} else {
					c["sub"] = tc.sub
				}
				if tc.noJTI {
					delete(c, "jti")
				}
			})
			_, err := VerifyAssertion(a, now, testPolicy, lookup, CodeInvalidClient)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || err.Code != CodeInvalidClient || err.Status != 401 || !strings.Contains(err.Description, tc.want)):
				t.Fatalf("got %+v, want invalid_client 401 %q", err, tc.want)
			}
		})
	}
}

func TestSafe(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"plain":     {"team/app", "team/app"},
		"quote":     {`a"b\c`, "a?b?c"},
		"control":   {"a\nb", "a?b"},
		"non-ASCII": {"ü", "?"},
		"long":      {strings.Repeat("x", 100), strings.Repeat("x", 80) + "..."},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := safe(tc.in); got != tc.want {
				t.Errorf("safe(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func ecPEM(t testing.TB) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// BenchmarkRefusalCost: what an unauthenticated caller can time. An unknown client_id
// or kid costs one decoy RSA verification of the signature's size, like a wrong
// signature, so the answer's time does not tell which clients and keys exist
// (docs/benchmarks.md). 4096-bit keys, the size where a difference would show most.
func BenchmarkRefusalCost(b *testing.B) {
	priv, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		b.Fatal(err)
	}
	published, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		b.Fatal(err)
	}
	k, stranger := newPair(b), newPair(b)
	stranger4k := keyPair{priv: priv, id: "stranger"}
	lookup := mapLookup{"team/app": {ClientID: "team/app", Subject: "system:servicekey:team:app",
		Keys: []PublicKey{{ID: k.id, Key: &k.priv.PublicKey, Active: true}, {ID: "big", Key: &published.PublicKey, Active: false}}}}
	cases := map[string]string{
		"wrong signature, 2048":   sign(b, jwt.SigningMethodRS256, stranger.priv, k.id, nil),
		"unknown client_id, 2048": sign(b, jwt.SigningMethodRS256, stranger.priv, k.id, func(c jwt.MapClaims) { c["iss"] = "team/nobody" }),
		"unknown kid, 2048":       sign(b, jwt.SigningMethodRS256, stranger.priv, "nope", nil),
		"wrong signature, 4096":   sign(b, jwt.SigningMethodRS256, stranger4k.priv, "big", nil),
		"unknown client_id, 4096": sign(b, jwt.SigningMethodRS256, stranger4k.priv, "big", func(c jwt.MapClaims) { c["iss"] = "team/nobody" }),
	}
	// A crafted signature above any modulus: crypto/rsa refuses it without the
	// exponentiation, so verifyOne spends a decoy one for the known key too.
	ones := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 512))
	for name, a := range map[string]string{"all-ones signature, known kid, 4096": cases["wrong signature, 4096"], "all-ones signature, unknown client_id, 4096": cases["unknown client_id, 4096"]} {
		cases[name] = a[:strings.LastIndexByte(a, '.')+1] + ones
	}
	for name, a := range cases {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, e := VerifyAssertion(a, now, testPolicy, lookup, CodeInvalidGrant); e == nil || e.Cause == "" {
					b.Fatal("not refused as unauthenticated")
				}
			}
		})
	}
}
