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

// Package client is what a workload imports to use its ServiceKey: it loads the
// mounted key file, gets access tokens (an oauth2.TokenSource), and sends them with
// requests, fetching a new token and re-sending once when a resource server answers
// "Access token expired".
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"
	"k8s.io/utils/clock"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
)

// Options configure a TokenSource.
type Options struct {
	// KeyFile is the path of the mounted key.json. It is read again before every token
	// request, so a rotated key (the kubelet updates the mounted Secret) is used
	// without a restart.
	KeyFile string
	// Scopes to request; empty means the key's scopes.
	Scopes []string
	// TokenURL overrides the key file's token_uri (e.g. an in-cluster Service URL). The
	// grant's audience stays the key file's token_uri, the URL the server knows itself by.
	TokenURL string
	// HTTPClient talks to the token endpoint; it never carries an Authorization header
	// there. Default: http.DefaultClient.
	HTTPClient *http.Client
	// RefreshBefore gets a new token this long before the current one expires
	// (default 1 minute).
	RefreshBefore time.Duration
	// Clock is injected for tests; default real time.
	Clock clock.PassiveClock
	// AllowedOrigins configures NewHTTPClient's Transport: where the access token may
	// be sent (default: the origins of its URL audiences). AllowInsecureHTTP permits
	// plain http to hosts other than loopback, for the token endpoint and the Transport.
	AllowedOrigins    []string
	AllowInsecureHTTP bool
}

// AssertionLifetime is how long the grants this package signs are valid (x/oauth2/jwt
// defaults to an hour). A short lifetime makes a captured grant useless soon, and
// bounds the window in which a replay could reach a token-server replica whose jti
// cache has not seen it (the caches are per replica).
const AssertionLifetime = 2 * time.Minute

// TokenSource caches an access token and gets a new one when it is about to expire or
// was reported expired. It implements oauth2.TokenSource and is safe for concurrent use.
type TokenSource struct {
	opts Options

	mu      sync.Mutex
	tok     *oauth2.Token
	keyData []byte
	cfg     *jwt.Config
	// refresh is the refresh token the server gave with tok, when the ServiceKey has
	// spec.refreshTokens ("" otherwise, and after a refusal or a new key file).
	refresh string
	// noRefresh: the server wants client authentication to refresh (the key has a
	// client secret, which this TokenSource does not hold), so grants are signed.
	noRefresh bool
}

// NewTokenSource checks the key file now, so a bad mount fails at startup with a clear
// error instead of at the first request.
func NewTokenSource(opts Options) (*TokenSource, error) {
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.RefreshBefore <= 0 {
		opts.RefreshBefore = time.Minute
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	s := &TokenSource{opts: opts}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadKeyFile reads and checks a key file. Errors name the file and the problem,
// never key material.
func LoadKeyFile(path string) (keyutil.KeyFile, error) {
	data, err := os.ReadFile(path) //nolint:gosec // the path is the caller's key file
	if err != nil {
		return keyutil.KeyFile{}, fmt.Errorf("read key file: %w", err)
	}
	kf, err := keyutil.ParseKeyFile(data)
	if err != nil {
		return keyutil.KeyFile{}, fmt.Errorf("key file %s: %w", path, err)
	}
	if _, _, err := keyutil.ParsePrivateKey([]byte(kf.PrivateKey)); err != nil {
		return keyutil.KeyFile{}, fmt.Errorf("key file %s: private_key: %w", path, err)
	}
	if kf.TokenURI == "" {
		return keyutil.KeyFile{}, fmt.Errorf("key file %s has no token_uri", path)
	}
	return kf, nil
}

// reload re-reads the key file and rebuilds the grant configuration when it changed.
// Callers hold mu (or own s exclusively).
func (s *TokenSource) reload() error {
	data, err := os.ReadFile(s.opts.KeyFile)
	if err != nil {
		return fmt.Errorf("read key file: %w", err)
	}
	if s.cfg != nil && bytes.Equal(data, s.keyData) {
		return nil
	}
	kf, err := LoadKeyFile(s.opts.KeyFile)
	if err != nil {
		return err
	}
	tokenURL := s.opts.TokenURL
	if tokenURL == "" {
		tokenURL = kf.TokenURI
	}
	u, err := url.Parse(tokenURL)
	if err != nil {
		return fmt.Errorf("token endpoint URL: %w", err)
	}
	if err := secureURL(u, s.opts.AllowInsecureHTTP, "a grant"); err != nil {
		return err
	}
	s.refresh, s.noRefresh = "", false // a new key: its grants start new families
	s.cfg = &jwt.Config{Email: kf.ClientID, PrivateKey: []byte(kf.PrivateKey), PrivateKeyID: kf.KeyID,
		TokenURL: tokenURL, Audience: kf.TokenURI, Scopes: s.opts.Scopes, Expires: AssertionLifetime}
	s.keyData = data
	return nil
}

// Token returns the cached token, or a new one when it expires within RefreshBefore:
// from the refresh token the server gave with the last one, when there is one, else
// (and when the server refuses the refresh token) from a newly signed grant.
func (s *TokenSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && s.opts.Clock.Now().Before(s.tok.Expiry.Add(-s.opts.RefreshBefore)) {
		return s.tok, nil
	}
	if err := s.reload(); err != nil {
		return nil, err
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, s.opts.HTTPClient)
	if s.refresh != "" {
		tok, err := s.useRefreshToken(ctx)
		if err == nil || !refused(err) {
			return tok, err
		}
		var re *RefusedError
		s.noRefresh = errors.As(err, &re) && re.Code == "invalid_client"
		s.refresh = "" // dead (reused, expired, or its key retired): sign a grant
	}
	// A fresh jti per assertion (RFC 7523 §3, item 7): the server remembers it until
	// the assertion expires, so a captured assertion cannot be exchanged again.
	jti, err := newJTI()
	if err != nil {
		return nil, err
	}
	s.cfg.PrivateClaims = map[string]any{"jti": jti}
	tok, err := s.cfg.TokenSource(ctx).Token()
	if err != nil {
		return nil, describe(err)
	}
	s.tok = tok
	// golang.org/x/oauth2/jwt leaves refresh_token in the raw response only.
	if !s.noRefresh {
		s.refresh, _ = tok.Extra("refresh_token").(string)
	}
	return tok, nil
}

// KeyID is the private_key_id of the key this TokenSource signs grants with: the key
// file as read by NewTokenSource, then at each token request. A rotated key shows here
// from the first token requested after the kubelet updated the mounted file, so a
// workload can log which key it uses.
func (s *TokenSource) KeyID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg == nil {
		return ""
	}
	return s.cfg.PrivateKeyID
}

// useRefreshToken exchanges the refresh token (RFC 6749 §6) with golang.org/x/oauth2,
// sending the client_id and no secret, and keeps the rotated one.
func (s *TokenSource) useRefreshToken(ctx context.Context) (*oauth2.Token, error) {
	conf := &oauth2.Config{ClientID: s.cfg.Email,
		Endpoint: oauth2.Endpoint{TokenURL: s.cfg.TokenURL, AuthStyle: oauth2.AuthStyleInParams}}
	tok, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: s.refresh}).Token()
	if err != nil {
		return nil, describe(err)
	}
	s.tok, s.refresh = tok, tok.RefreshToken
	return tok, nil
}

// refused says the token endpoint refused the request for good (400 or 401), rather
// than asking to retry later (429, 503) or not answering.
func refused(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.Response != nil &&
		(re.Response.StatusCode == http.StatusBadRequest || re.Response.StatusCode == http.StatusUnauthorized)
}

// newJTI is 128 random bits, base64url: unique without coordination.
func newJTI() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("assertion jti: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Invalidate forgets tok if it is still the cached token, so the next Token call gets
// a new one; concurrent callers that saw the same expired token cause one fetch only.
func (s *TokenSource) Invalidate(tok *oauth2.Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok == tok {
		s.tok = nil
	}
}

// describe turns a token endpoint refusal into "token endpoint refused the grant:
// <code>: <description>".
// golang.org/x/oauth2/jwt does not parse the RFC 6749 §5.2 body, so this does.
func describe(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return fmt.Errorf("get access token: %w", err)
	}
	code, desc := re.ErrorCode, re.ErrorDescription
	if code == "" {
		var body struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(re.Body, &body) == nil {
			code, desc = body.Error, body.Description
		}
	}
	if code == "" {
		return fmt.Errorf("get access token: %w", err)
	}
	return &RefusedError{Code: code, Description: desc, cause: re}
}

// RefusedError is a token endpoint's RFC 6749 §5.2 refusal, with its error code and
// description. errors.As also finds the *oauth2.RetrieveError beneath it, for the
// HTTP status (400 and 401 are final; 429 and 503 say when to retry).
type RefusedError struct {
	Code, Description string
	cause             *oauth2.RetrieveError
}

// Error reads "token endpoint refused the grant: <code>: <description>".
func (e *RefusedError) Error() string {
	return "token endpoint refused the grant: " + e.Code + ": " + e.Description
}

// Unwrap returns the *oauth2.RetrieveError the refusal was read from.
func (e *RefusedError) Unwrap() error { return e.cause }
