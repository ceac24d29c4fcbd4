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
	"crypto/rand"
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

	gojwt "github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2/jwt"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
	"github.com/servicekey-operator/servicekey-operator/verifier"
)

const (
	tokenAddress = "127.0.0.1:18443"
	// demoIssuer is where the token server listens: the chart's issuer value, so
	// key files' token_uri points at it.
	demoIssuer   = "http://" + tokenAddress
	demoAudience = "https://api.servicekey.demo"
)

// getToken obtains an access token exactly as an application would, with
// golang.org/x/oauth2/jwt and the mounted key file, and verifies it with verifier/
// (metadata, then the JWKS), as a resource server would.
func getToken(ctx context.Context, v *verifier.Verifier, kf keyutil.KeyFile) error {
	step("An application gets an access token with golang.org/x/oauth2/jwt and key.json")
	say("jwt.Config{Email: %q, PrivateKeyID: %q, TokenURL: %q, Audience: %q}", kf.ClientID, kf.KeyID, kf.TokenURI, kf.TokenURI)
	cfg := &jwt.Config{Email: kf.ClientID, PrivateKey: []byte(kf.PrivateKey), PrivateKeyID: kf.KeyID,
		TokenURL: kf.TokenURI, Audience: kf.TokenURI, Scopes: []string{"invoices:read"}}
	tok, err := cfg.TokenSource(ctx).Token()
	if err != nil {
		return fmt.Errorf("get token: %w", err)
	}
	say("got a %s token, %d bytes (never printed), expires %s", tok.TokenType, len(tok.AccessToken), tok.Expiry.UTC().Format(time.RFC3339))
	claims, err := v.Verify(ctx, tok.AccessToken)
	if err != nil {
		return err
	}
	say("signature verified against %s/.well-known/jwks.json", demoIssuer)
	pretty, _ := json.MarshalIndent(claims, "    ", "  ")
	fmt.Printf("    claims: %s\n", pretty)
	return nil
}

// tryGrant sends one jwt-bearer grant and prints the answer's status and error.
func tryGrant(kf keyutil.KeyFile) error {
	status, body, err := grant(kf)
	if err != nil {
		return err
	}
	if status == http.StatusOK {
		say("HTTP 200: token issued")
		return nil
	}
	say("HTTP %d: %s", status, body)
	return nil
}

// grant sends one jwt-bearer grant and returns the status and, on refusal, the
// error body (an issued token is never returned or printed).
func grant(kf keyutil.KeyFile) (int, string, error) {
	key, err := gojwt.ParseRSAPrivateKeyFromPEM([]byte(kf.PrivateKey))
	if err != nil {
		return 0, "", err
	}
	now := time.Now()
	// A fresh jti per assertion: the token server accepts each assertion once.
	t := gojwt.NewWithClaims(gojwt.SigningMethodRS256, gojwt.MapClaims{"iss": kf.ClientID, "aud": kf.TokenURI,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": rand.Text()})
	t.Header["kid"] = kf.KeyID
	a, err := t.SignedString(key)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.PostForm(kf.TokenURI, url.Values{"grant_type": {tokenserver.GrantTypeJWTBearer}, "assertion": {a}}) //nolint:noctx // demo
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", nil
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), nil
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
