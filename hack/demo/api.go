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
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/servicekey-operator/servicekey-operator/client"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
	"github.com/servicekey-operator/servicekey-operator/verifier"
)

// shellToken runs examples/shell/get-token.sh (openssl and curl only) on the
// Secret's files, as a pod with the Secret mounted would.
func shellToken(dir string, s *corev1.Secret) error {
	step("The same with openssl and curl only: examples/shell/get-token.sh <mounted Secret dir>")
	mount := filepath.Join(dir, "secret")
	if err := os.MkdirAll(mount, 0o700); err != nil {
		return err
	}
	for name, data := range s.Data {
		if err := os.WriteFile(filepath.Join(mount, name), data, 0o600); err != nil {
			return err
		}
	}
	cmd := exec.Command("bash", filepath.Join(testenv.RepoRoot(), "examples", "shell", "get-token.sh"), mount, "invoices:read") //nolint:gosec // our own script
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("get-token.sh: %w", err)
	}
	var got struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
		Scope       string `json:"scope"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		return fmt.Errorf("get-token.sh answer: %w", err)
	}
	if got.AccessToken == "" {
		return errors.New("get-token.sh answered no token")
	}
	say("token_type %s, expires_in %ds, scope %q, access_token <%d bytes, not printed>", got.TokenType, got.ExpiresIn, got.Scope, len(got.AccessToken))
	return nil
}

// protectedCall serves a small API behind the verifier middleware and calls it with
// the client kit's http.Client, built from the key file.
func protectedCall(ctx context.Context, v *verifier.Verifier, dir string) error {
	step("Calling a protected endpoint: verifier middleware on the API, client kit in the caller")
	mux := http.NewServeMux()
	mux.Handle("/invoices", v.Require("invoices:read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := verifier.ClaimsFrom(r.Context())
		fmt.Fprintf(w, "invoices for %s (scope %q)", c.ClientID, c.Scope)
	})))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()
	apiURL := "http://" + ln.Addr().String() + "/invoices"
	for _, withToken := range []bool{false, true} {
		httpClient := http.DefaultClient
		if withToken {
			// The token goes only to origins it is meant for; the demo's API listens on
			// loopback, not at the key's audience URL, so it is named here.
			if httpClient, err = client.NewHTTPClient(client.Options{KeyFile: filepath.Join(dir, "key.json"),
				Scopes: []string{"invoices:read"}, AllowedOrigins: []string{"http://" + ln.Addr().String()}}); err != nil {
				return err
			}
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, apiURL, nil)
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		say("GET %s %s: %s %s %s", apiURL, map[bool]string{false: "without a token", true: "with the client kit"}[withToken],
			resp.Status, resp.Header.Get("WWW-Authenticate"), body)
	}
	return nil
}
