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
	"net/netip"
	"net/url"
	"strings"
	"sync"

	"github.com/golang-jwt/jwt/v5"
)

// maxErrorBody bounds how much of a 401 body is read to look for the expiry error.
const maxErrorBody = 64 << 10

// Transport adds the access token to each request and, when the resource server
// answers 401 invalid_token "Access token expired" (in WWW-Authenticate or the JSON
// body), gets a new token and re-sends the request exactly once, body included. A
// second 401 is returned to the caller, never looped on.
//
// A bearer token is worth what it grants to whoever holds it (RFC 6750 §5.2), so the
// Transport sends it only where it is meant to go: to AllowedOrigins — by default the
// origins of the token's own audiences that are URLs (the ServiceKey's
// spec.audiences) — over https, or plain http to a loopback address. Every request is
// checked, redirects included (net/http sends each hop through RoundTrip).
type Transport struct {
	// Source provides tokens.
	Source *TokenSource
	// Base sends the requests; default http.DefaultTransport.
	Base http.RoundTripper
	// AllowedOrigins are the origins ("https://billing.internal", "http://127.0.0.1:8080")
	// the token may be sent to; empty: the origins of the token's URL audiences.
	AllowedOrigins []string
	// AllowInsecureHTTP permits plain http to hosts other than loopback, for a network
	// that encrypts the hop itself (a service mesh with mTLS).
	AllowInsecureHTTP bool

	mu        sync.Mutex
	originsOf string   // the token origins were read from
	origins   []string // its URL audiences' origins
}

// NewHTTPClient is an http.Client that authenticates every request with the key file.
func NewHTTPClient(opts Options) (*http.Client, error) {
	src, err := NewTokenSource(opts)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &Transport{Source: src, AllowedOrigins: opts.AllowedOrigins, AllowInsecureHTTP: opts.AllowInsecureHTTP}}, nil
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.secureEnough(req.URL); err != nil {
		return nil, err
	}
	if err := rewindable(req); err != nil {
		return nil, err
	}
	tok, err := t.Source.Token()
	if err != nil {
		return nil, err
	}
	if err := t.allowed(req.URL, tok.AccessToken); err != nil {
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
	if err := t.allowed(req.URL, tok.AccessToken); err != nil {
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

// secureEnough refuses to send a token over plain http except to loopback.
func (t *Transport) secureEnough(u *url.URL) error {
	return secureURL(u, t.AllowInsecureHTTP, "an access token")
}

// secureURL refuses plain http except to loopback (or when allowed): what is sent
// there, an access token or a grant whose answer is one, must not cross a network in
// the clear.
func secureURL(u *url.URL, allowInsecure bool, what string) error {
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme != "http":
		return fmt.Errorf("client: refusing to send %s to %s: only https (and http to loopback) are supported", what, redact(u))
	case allowInsecure || isLoopback(u.Hostname()):
		return nil
	}
	return fmt.Errorf("client: refusing to send %s over plain http to %s: use https (http is allowed to loopback only, or with AllowInsecureHTTP)", what, redact(u))
}

// allowed checks the request's origin against AllowedOrigins or the token's audiences.
func (t *Transport) allowed(u *url.URL, token string) error {
	allowed, from := t.AllowedOrigins, "AllowedOrigins"
	if len(allowed) == 0 {
		allowed, from = t.audienceOrigins(token), "the token's audiences"
	}
	want := origin(u)
	for _, a := range allowed {
		if p, err := url.Parse(a); err == nil && origin(p) == want {
			return nil
		}
	}
	listed := strings.Join(allowed, ", ")
	if listed == "" {
		listed = "none is an http(s) URL"
	}
	return fmt.Errorf("client: refusing to send the access token to %s: not among the allowed origins (%s: %s); set Options.AllowedOrigins",
		want, from, listed)
}

// audienceOrigins reads the token's aud (not verifying it: this only narrows where
// the client sends its own token) and keeps those that are http(s) URLs. The answer
// is kept for the token, which is reused until it expires.
func (t *Transport) audienceOrigins(token string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if token == t.originsOf {
		return t.origins
	}
	var claims jwt.RegisteredClaims
	var out []string
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err == nil {
		for _, a := range claims.Audience {
			if p, err := url.Parse(a); err == nil && (p.Scheme == "https" || p.Scheme == "http") && p.Host != "" {
				out = append(out, origin(p))
			}
		}
	}
	t.originsOf, t.origins = token, out
	return out
}

// origin is scheme://host[:port] (RFC 6454), lower case, default port omitted.
func origin(u *url.URL) string {
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host
}

// isLoopback: localhost or a loopback IP address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// redact is the URL without user info, query or fragment, for error messages.
func redact(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
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
