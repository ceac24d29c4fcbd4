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

// Package josecheck holds the JWS header rules that the token server (for grants and
// client assertions) and the verifier (for access tokens) share: RFC 7515 §4.1 header
// by header, and the recommendations of RFC 8725 §3. golang-jwt checks alg against
// the caller's list and verifies the signature; it ignores every other header, which
// RFC 7515 allows only for parameters a recipient may safely ignore. These checks
// refuse the rest. docs/security.md has the table.
package josecheck

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"
)

// Typ values (RFC 7515 §4.1.9: a media type, compared case-insensitively, with the
// "application/" prefix optional).
const (
	// TypJWT is what assertions may say they are (RFC 7519 §5.1, RFC 7523).
	TypJWT = "jwt"
	// TypAccessToken is what RFC 9068 §2.1 access tokens must say they are.
	TypAccessToken = "at+jwt"
)

// Rule is one header check: it returns why the header must be refused, or "".
type Rule func(h map[string]any) string

// Rules are the checks for a JWS whose typ must be one of typs (lower case, without
// "application/"); typRequired says whether typ may be absent (it may for assertions,
// RFC 7523 sets no typ; it may not for access tokens, RFC 9068 §4).
func Rules(typRequired bool, typs ...string) []Rule {
	return []Rule{noRefusedParameter, kidIsString, typIs(typRequired, typs)}
}

// Check runs rules in order; the first refusal is the answer.
func Check(h map[string]any, rules []Rule) string {
	for _, r := range rules {
		if why := r(h); why != "" {
			return why
		}
	}
	return ""
}

// refusedParameters are the header parameters no JWS is accepted with, each with why:
//   - jku, x5u (RFC 7515 §4.1.2, §4.1.5) name a URL to fetch the key from; keys come only
//     from what the recipient trusts (RFC 8725 §3.10), and a sender expecting the URL to
//     be followed is told so rather than ignored;
//   - jwk, x5c (§4.1.3, §4.1.6) carry the key itself, usable only if trusted some other
//     way (§10.3); trusting it would let anyone sign;
//   - crit (§4.1.11) lists extensions the recipient must understand or refuse the JWS;
//     none is understood here, and an empty crit is invalid too; b64 (RFC 7797) is such
//     an extension, which RFC 7797 §6 requires in crit;
//   - enc, zip belong to JWE (RFC 7516 §4.1.2, §4.1.3): in a JWS they signal a confused
//     or crafted token, and compression is not to be used (RFC 8725 §3.6);
//   - cty (§4.1.10) is used only for nested JWTs (RFC 7519 §5.2), not accepted: the
//     payload must be the claims.
var refusedParameters = []struct {
	names []string
	why   string
}{
	{[]string{"jku", "x5u"}, ": keys are never fetched from a URL in the token (RFC 8725 section 3.10)"},
	{[]string{"jwk", "x5c"}, ": a key embedded in the token is never trusted (RFC 7515 section 4.1.3)"},
	{[]string{"crit"}, ": no JWS extension is understood here (RFC 7515 section 4.1.11)"},
	{[]string{"b64"}, ": unencoded payloads are not supported (RFC 7797)"},
	{[]string{"enc", "zip"}, ", a JWE parameter; only signed, uncompressed JWTs are accepted (RFC 8725 section 3.6)"},
	{[]string{"cty"}, ": nested JWTs are not accepted (RFC 7519 section 5.2)"},
}

// noRefusedParameter refuses a header carrying any of refusedParameters.
func noRefusedParameter(h map[string]any) string {
	for _, r := range refusedParameters {
		for _, name := range r.names {
			if _, ok := h[name]; ok {
				return "the JWS header has " + name + r.why
			}
		}
	}
	return ""
}

// kidIsString: kid (RFC 7515 §4.1.4) is a string; any other JSON type would otherwise
// read as "no kid" and widen the keys tried.
func kidIsString(h map[string]any) string {
	if v, ok := h["kid"]; ok {
		if _, isString := v.(string); !isString {
			return "the JWS header's kid is not a string (RFC 7515 section 4.1.4)"
		}
	}
	return ""
}

// typIs: explicit typing (RFC 8725 §3.11). A JWT of another kind (an access token,
// a logout token, an ID token with its own typ) is refused as a grant, and a grant
// is refused as an access token (RFC 8725 §3.12).
func typIs(required bool, typs []string) Rule {
	return func(h map[string]any) string {
		v, ok := h["typ"]
		if !ok {
			if required {
				return "the JWS header has no typ; it must be " + strings.Join(typs, " or ") + " (RFC 8725 section 3.11)"
			}
			return ""
		}
		s, _ := v.(string)
		s = strings.TrimPrefix(strings.ToLower(s), "application/")
		for _, t := range typs {
			if s == t {
				return ""
			}
		}
		return "the JWS header's typ must be " + strings.Join(typs, " or ") + " (RFC 8725 section 3.11)"
	}
}

// Compact says whether raw has the compact serialization's shape and alphabet: three
// base64url parts (RFC 7515 §7.1), no padding, nothing else. Go's base64 decoders skip
// CR and LF even in strict mode, so without this check one token could be sent in
// many spellings.
func Compact(raw string) bool {
	dots := 0
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

// ValidUTF8 says whether a compact JWS's header and payload decode to UTF-8 (RFC 8725
// §3.7: JSON in a JWT must be UTF-8; encoding/json would silently replace invalid
// bytes, so two different tokens could read as the same claims). Call it after
// Compact; it decodes the two segments again, which costs about a microsecond.
func ValidUTF8(raw string) bool {
	parts := strings.SplitN(raw, ".", 3)
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts[:2] {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil || !utf8.Valid(b) {
			return false
		}
	}
	return true
}
