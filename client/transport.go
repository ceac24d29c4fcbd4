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

package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxErrorBody bounds how much of a 401 body is read to look for the expiry error.
const maxErrorBody = 64 << 10

// Transport adds the access token to each request and, when the resource server
// answers 401 invalid_token "Access token expired" (in WWW-Authenticate or the JSON
// body), gets a new token and re-sends the request exactly once, body included. A
// second 401 is returned to the caller, never looped on.
type Transport struct {
	// Source provides tokens.
	Source *TokenSource
	// Base sends the requests; default http.DefaultTransport.
	Base http.RoundTripper
}

// NewHTTPClient is an http.Client that authenticates every request with the key file.
func NewHTTPClient(opts Options) (*http.Client, error) {
	src, err := NewTokenSource(opts)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &Transport{Source: src}}, nil
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := rewindable(req); err != nil {
		return nil, err
	}
	tok, err := t.Source.Token()
	if err != nil {
		return nil, err
	}
	resp, err := t.send(req, tok.AccessToken)
	if err != nil || !expired(resp) {
		return resp, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	t.Source.Invalidate(tok)
	if tok, err = t.Source.Token(); err != nil {
		return nil, err
	}
	return t.send(req, tok.AccessToken)
}

func (t *Transport) send(req *http.Request, token string) (*http.Response, error) {
	out := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("rewind request body: %w", err)
		}
		out.Body = body
	}
	out.Header.Set("Authorization", "Bearer "+token)
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(out)
}

// rewindable makes the body re-readable so the request can be sent twice.
func rewindable(req *http.Request) error {
	if req.Body == nil || req.Body == http.NoBody || req.GetBody != nil {
		return nil
	}
	data, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	req.Body, _ = req.GetBody()
	return nil
}

// expired reports whether resp is 401 invalid_token "expired", from the
// WWW-Authenticate header (RFC 6750 §3) or the JSON body. The body stays readable.
func expired(resp *http.Response) bool {
	if resp.StatusCode != http.StatusUnauthorized {
		return false
	}
	h := strings.ToLower(strings.Join(resp.Header.Values("WWW-Authenticate"), ","))
	if strings.Contains(h, `error="invalid_token"`) && strings.Contains(h, "expired") {
		return true
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	return json.Unmarshal(data, &body) == nil && body.Error == "invalid_token" &&
		strings.Contains(strings.ToLower(body.Description), "expired")
}
