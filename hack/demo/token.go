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

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	gojwt "github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2/jwt"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

const (
	tokenAddress = "127.0.0.1:18443"
	// demoIssuer is where the token server listens: the chart's issuer value, so
	// key files' token_uri points at it.
	demoIssuer   = "http://" + tokenAddress
	demoAudience = "https://api.servicekey.demo"
)

// getToken obtains an access token exactly as an application would, with
// golang.org/x/oauth2/jwt and the mounted key file, and verifies it via the JWKS.
func getToken(kf keyutil.KeyFile) error {
	step("An application gets an access token with golang.org/x/oauth2/jwt and key.json")
	say("jwt.Config{Email: %q, PrivateKeyID: %q, TokenURL: %q, Audience: %q}", kf.ClientID, kf.KeyID, kf.TokenURI, kf.TokenURI)
	cfg := &jwt.Config{Email: kf.ClientID, PrivateKey: []byte(kf.PrivateKey), PrivateKeyID: kf.KeyID,
		TokenURL: kf.TokenURI, Audience: kf.TokenURI, Scopes: []string{"invoices:read"}}
	tok, err := cfg.TokenSource(context.Background()).Token()
	if err != nil {
		return fmt.Errorf("get token: %w", err)
	}
	say("got a %s token, %d bytes (never printed), expires %s", tok.TokenType, len(tok.AccessToken), tok.Expiry.UTC().Format(time.RFC3339))
	claims, kid, err := verify(tok.AccessToken)
	if err != nil {
		return err
	}
	say("signature verified with key %s from %s/.well-known/jwks.json", kid, demoIssuer)
	pretty, _ := json.MarshalIndent(claims, "    ", "  ")
	fmt.Printf("    claims: %s\n", pretty)
	return nil
}

func verify(raw string) (*tokenserver.AccessTokenClaims, string, error) {
	resp, err := http.Get(demoIssuer + "/.well-known/jwks.json")
	if err != nil {
		return nil, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, "", err
	}
	claims := &tokenserver.AccessTokenClaims{}
	var kid string
	_, err = gojwt.ParseWithClaims(raw, claims, func(t *gojwt.Token) (any, error) {
		kid, _ = t.Header["kid"].(string)
		if keys := set.Key(kid); len(keys) == 1 {
			return keys[0].Key, nil
		}
		return nil, fmt.Errorf("kid %s not in the JWKS", kid)
	}, gojwt.WithValidMethods([]string{"ES256", "RS256"}), gojwt.WithIssuer(demoIssuer))
	if err != nil {
		return nil, "", fmt.Errorf("verify access token: %w", err)
	}
	return claims, kid, nil
}

// tryGrant sends one jwt-bearer grant, prints the answer's status and error, and
// returns the status.
func tryGrant(kf keyutil.KeyFile) (int, error) {
	key, err := gojwt.ParseRSAPrivateKeyFromPEM([]byte(kf.PrivateKey))
	if err != nil {
		return 0, err
	}
	now := time.Now()
	t := gojwt.NewWithClaims(gojwt.SigningMethodRS256, gojwt.MapClaims{"iss": kf.ClientID, "aud": kf.TokenURI,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
	t.Header["kid"] = kf.KeyID
	a, err := t.SignedString(key)
	if err != nil {
		return 0, err
	}
	resp, err := http.PostForm(kf.TokenURI, url.Values{"grant_type": {tokenserver.GrantTypeJWTBearer}, "assertion": {a}}) //nolint:noctx // demo
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		say("HTTP 200: token issued")
		return resp.StatusCode, nil
	}
	say("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	return resp.StatusCode, nil
}

// cliToken runs `servicekey-operator token --key-file key.json --json`, the CLI a
// person or a shell script uses, and shows its answer without the token itself.
func cliToken(binary, dir string, kf keyutil.KeyFile) error {
	step("The same from a shell: servicekey-operator token --key-file key.json --json")
	path := filepath.Join(dir, "key.json")
	data, err := kf.Marshal()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	out, err := exec.Command(binary, "token", "--key-file", path, "--json").Output() //nolint:gosec // our own binary
	if err != nil {
		return fmt.Errorf("token CLI: %w", err)
	}
	var got map[string]string
	if err := json.Unmarshal(out, &got); err != nil {
		return fmt.Errorf("token CLI output: %w", err)
	}
	say("token_type %s, expiry %s, scope %q, access_token <%d bytes, not printed>",
		got["token_type"], got["expiry"], got["scope"], len(got["access_token"]))
	return nil
}
