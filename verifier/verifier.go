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

// Package verifier is net/http middleware for resource servers: it checks access
// tokens (RFC 9068 JWTs) offline against the token server's JWKS and answers with
// RFC 6750 errors — in particular 401 invalid_token "Access token expired", which the
// client kit answers by fetching a new token and re-sending once.
package verifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/servicekey-operator/servicekey-operator/api/josecheck"
)

// ExpiredDescription is the error_description of an expired token, the text clients
// look for before getting a new token and retrying (docs/clients.md).
const ExpiredDescription = "Access token expired"

// Options configure a Verifier.
type Options struct {
	// Issuer is the token server's issuer identifier; tokens must carry it as `iss`.
	Issuer string
	// Audience is this resource server's identifier; tokens must list it in `aud`.
	Audience string
	// DiscoveryURL is where the RFC 8414 metadata is fetched; default
	// <Issuer>/.well-known/oauth-authorization-server.
	DiscoveryURL string
	// JWKSURL overrides the metadata's jwks_uri (e.g. an in-cluster Service URL).
	JWKSURL string
	// HTTPClient fetches metadata and keys; default http.DefaultClient.
	HTTPClient *http.Client
	// Leeway is the clock skew allowed for exp and nbf; default 30s.
	Leeway time.Duration
	// UnknownKIDRefresh bounds how often an unknown kid refetches the JWKS; default
	// once every 10 seconds, so a flood of forged kids cannot hammer the token server.
	UnknownKIDRefresh time.Duration
	// RefreshInterval is how often the JWKS is refetched in the background, so a key
	// the token server stopped publishing stops being trusted; default: the JWKS
	// response's Cache-Control max-age at start (the token server sends 5 minutes),
	// else 5 minutes; kept within 1s..1h.
	RefreshInterval time.Duration
	// MaxKeyWait is the longest a request waits for keys: for the refetch an unknown
	// kid triggers, or for that refetch's rate limit. Default 250ms; beyond it the
	// token is refused as unverifiable rather than the request held.
	MaxKeyWait time.Duration
	// MaxTokenLifetime, when set, refuses tokens whose exp - iat exceeds it (and
	// tokens without iat), whatever the issuer chose.
	MaxTokenLifetime time.Duration
	// Now is injected for tests; default time.Now.
	Now func() time.Time
}

// Claims are the claims of an access token (RFC 9068 §2.2).
type Claims struct {
	jwt.RegisteredClaims
	ClientID string `json:"client_id"`
	Scope    string `json:"scope,omitempty"`
}

// Scopes are the token's scopes.
func (c *Claims) Scopes() []string { return strings.Fields(c.Scope) }

// Verifier checks access tokens.
type Verifier struct {
	opts   Options
	keys   keyfunc.Keyfunc
	parser *jwt.Parser
}

// New discovers the JWKS and starts keeping it fresh until ctx is done.
func New(ctx context.Context, opts Options) (*Verifier, error) {
	if opts.Issuer == "" || opts.Audience == "" {
		return nil, errors.New("verifier: Issuer and Audience are required")
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.Leeway == 0 {
		opts.Leeway = 30 * time.Second
	}
	if opts.UnknownKIDRefresh == 0 {
		opts.UnknownKIDRefresh = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxKeyWait <= 0 {
		opts.MaxKeyWait = 250 * time.Millisecond
	}
	jwksURL := opts.JWKSURL
	if jwksURL == "" {
		var err error
		if jwksURL, err = discover(ctx, opts); err != nil {
			return nil, err
		}
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = jwksMaxAge(ctx, opts.HTTPClient, jwksURL)
	}
	opts.RefreshInterval = min(max(opts.RefreshInterval, time.Second), time.Hour)
	keys, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{jwksURL}, keyfunc.Override{
		Client:          opts.HTTPClient,
		RefreshInterval: opts.RefreshInterval,
		HTTPTimeout:     keyFetchTimeout,
		// jwkset runs the unknown-kid refetch under this deadline too: it must fit a
		// whole fetch. The request itself waits at most MaxKeyWait (key()).
		RateLimitWaitMax:  keyFetchTimeout,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(opts.UnknownKIDRefresh), 1),
	})
	if err != nil {
		return nil, fmt.Errorf("verifier: JWKS %s: %w", jwksURL, err)
	}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"ES256", "RS256"}), jwt.WithIssuer(opts.Issuer), jwt.WithStrictDecoding(),
		jwt.WithAudience(opts.Audience), jwt.WithExpirationRequired(), jwt.WithLeeway(opts.Leeway), jwt.WithTimeFunc(opts.Now))
	return &Verifier{opts: opts, keys: keys, parser: parser}, nil
}

// discover reads jwks_uri from the RFC 8414 metadata, checking its issuer.
func discover(ctx context.Context, opts Options) (string, error) {
	u := opts.DiscoveryURL
	if u == "" {
		u = strings.TrimSuffix(opts.Issuer, "/") + "/.well-known/oauth-authorization-server"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("verifier: discovery %s: %w", u, err)
	}
	resp, err := opts.HTTPClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("verifier: discovery %s: %w", u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	var md struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&md) != nil || md.JWKSURI == "" {
		return "", fmt.Errorf("verifier: discovery %s: no usable metadata (HTTP %d)", u, resp.StatusCode)
	}
	if md.Issuer != opts.Issuer {
		return "", fmt.Errorf("verifier: discovery %s names issuer %q, want %q (RFC 8414 section 3.3)", u, md.Issuer, opts.Issuer)
	}
	return md.JWKSURI, nil
}

// jwksMaxAge reads the JWKS's Cache-Control max-age (RFC 9111 §5.2.2.1); 5 minutes
// when the response has none or cannot be fetched (the background refresh retries).
func jwksMaxAge(ctx context.Context, c *http.Client, jwksURL string) time.Duration {
	const fallback = 5 * time.Minute
	ctx, cancel := context.WithTimeout(ctx, keyFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return fallback
	}
	resp, err := c.Do(req)
	if err != nil {
		return fallback
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fallback
	}
	for _, d := range strings.Split(resp.Header.Get("Cache-Control"), ",") {
		if v, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(d)), "max-age="); ok {
			if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
				return time.Duration(secs) * time.Second
			}
		}
	}
	return fallback
}

// accessTokenHeaderRules: RFC 7515 §4.1 and RFC 8725 §3; typ must be at+jwt (RFC 9068 §4).
var accessTokenHeaderRules = josecheck.Rules(true, josecheck.TypAccessToken)

// Verify checks a token: its JWS header (typ at+jwt, RFC 9068 §4, and the RFC 7515 /
// RFC 8725 rules of api/josecheck), signature through the JWKS (refreshed when an
// unknown kid shows up, waiting at most MaxKeyWait), iss, aud, exp, nbf and, when
// set, MaxTokenLifetime.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	// Only the issuer can sign a token that passes, and it writes UTF-8 JSON, so the
	// UTF-8 check (RFC 8725 §3.7) is the token server's, on grants from anyone; here
	// the alphabet check keeps each token to one spelling.
	if !josecheck.Compact(raw) {
		return nil, errors.New("invalid access token: token is malformed: only base64url characters and two dots are allowed")
	}
	claims := &Claims{}
	_, err := v.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		if why := josecheck.Check(t.Header, accessTokenHeaderRules); why != "" {
			return nil, errors.New(why)
		}
		return v.key(ctx, t)
	})
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, errExpired
	case err != nil:
		return nil, fmt.Errorf("invalid access token: %w", err)
	}
	if max := v.opts.MaxTokenLifetime; max > 0 {
		if claims.IssuedAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > max {
			return nil, fmt.Errorf("invalid access token: its lifetime (exp - iat) is unknown or exceeds %v", max)
		}
	}
	return claims, nil
}

// key finds the verification key. An unknown kid makes keyfunc refetch the JWKS; that
// refetch runs detached from the request (a client that hangs up, or a short deadline,
// must not cancel the one refresh the rate limit allows) and the request waits for it
// at most MaxKeyWait.
func (v *Verifier) key(ctx context.Context, t *jwt.Token) (any, error) {
	// A known kid is read from memory; with a done context an unknown one fails at
	// once without spending the refetch rate limit (x/time/rate checks the context
	// first), so only unknown kids pay for the goroutine below.
	if k, err := v.keys.KeyfuncCtx(doneContext)(t); err == nil {
		return k, nil
	}
	type result struct {
		key any
		err error
	}
	done := make(chan result, 1)
	go func() {
		fetch, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyFetchTimeout)
		defer cancel()
		k, err := v.keys.KeyfuncCtx(fetch)(t)
		done <- result{k, err}
	}()
	wait := time.NewTimer(v.opts.MaxKeyWait)
	defer wait.Stop()
	select {
	case r := <-done:
		return r.key, r.err
	case <-wait.C:
		return nil, fmt.Errorf("no key for kid %q within %v (the JWKS is being refetched)", t.Header["kid"], v.opts.MaxKeyWait)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// doneContext is a context that is already done: it reads keys without fetching.
var doneContext = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// keyFetchTimeout bounds a JWKS fetch, in the background or for an unknown kid.
const keyFetchTimeout = 10 * time.Second

// errExpired carries the exact text clients match (docs/clients.md), capital letter included.
var errExpired = errors.New(ExpiredDescription) //nolint:staticcheck // ST1005: the wire text is fixed

type claimsKey struct{}

// ClaimsFrom returns the verified claims that Require put in the request context.
func ClaimsFrom(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok
}

// Require is middleware that admits requests with a valid token holding every one of
// scopes, and answers others per RFC 6750 §3: 401 without or with a bad token, 403
// insufficient_scope, 400 for a malformed Authorization header. It is
// Authorize(Rule{Scopes: scopes}).
func (v *Verifier) Require(scopes ...string) func(http.Handler) http.Handler {
	return v.Authorize(Rule{Scopes: scopes})
}

// Rule says who may call a route: a valid token holding every scope in Scopes and,
// when Subjects or ClientIDs is set, a token whose `sub` is one of Subjects or whose
// `client_id` is one of ClientIDs. Scope says what a caller may do; the identity lists
// let a resource server authorize on who the caller is, such as one ServiceKey
// (`client_id` `<namespace>/<name>`) or a subject a ServiceKeyPolicy granted.
type Rule struct {
	Scopes    []string
	Subjects  []string
	ClientIDs []string
}

// admits says why claims do not satisfy the rule, or "" when they do.
func (rule Rule) admits(claims *Claims) string {
	for _, s := range rule.Scopes {
		if !slices.Contains(claims.Scopes(), s) {
			return "the token lacks scope " + s
		}
	}
	if len(rule.Subjects) == 0 && len(rule.ClientIDs) == 0 {
		return ""
	}
	if slices.Contains(rule.Subjects, claims.Subject) || slices.Contains(rule.ClientIDs, claims.ClientID) {
		return ""
	}
	return "the token's subject and client_id are not among the callers this route admits"
}

// Authorize is middleware that admits requests whose token satisfies rule; a valid
// token that does not gets 403 insufficient_scope (RFC 6750 §3.1: the request needs
// privileges the token does not carry), the rest as Require says.
func (v *Verifier) Authorize(rule Rule) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw, present, ok := bearer(r)
			switch {
			case !present:
				w.Header().Set("WWW-Authenticate", `Bearer realm="servicekey"`)
				writeError(w, http.StatusUnauthorized, "", "", "")
				return
			case !ok:
				writeError(w, http.StatusBadRequest, "invalid_request", "the Authorization header must be: Bearer <token>", "")
				return
			}
			claims, err := v.Verify(r.Context(), raw)
			if err != nil {
				writeError(w, http.StatusUnauthorized, "invalid_token", err.Error(), "")
				return
			}
			if why := rule.admits(claims); why != "" {
				writeError(w, http.StatusForbidden, "insufficient_scope", why, strings.Join(rule.Scopes, " "))
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
		})
	}
}

// bearer extracts the token of `Authorization: Bearer <token>` (RFC 6750 §2.1).
func bearer(r *http.Request) (token string, present, ok bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false, false
	}
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return "", true, false
	}
	return token, true, true
}

// writeError answers in both forms clients read: the WWW-Authenticate challenge
// (RFC 6750 §3) and a JSON body {"error","error_description"}.
func writeError(w http.ResponseWriter, status int, code, description, scope string) {
	if code != "" {
		challenge := fmt.Sprintf(`Bearer realm="servicekey", error=%q, error_description=%q`, code, sanitize(description))
		if scope != "" {
			challenge += fmt.Sprintf(`, scope=%q`, scope)
		}
		w.Header().Set("WWW-Authenticate", challenge)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if code != "" {
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": description})
	}
}

// sanitize keeps a description within the quoted-string characters RFC 6750 allows.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '?'
		}
		return r
	}, s)
}
