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
	"encoding/json"
	"errors"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/go-logr/logr"
)

// Grant and assertion type URNs (RFC 7523 §2.1, §2.2).
const (
	GrantTypeJWTBearer    = "urn:ietf:params:oauth:grant-type:jwt-bearer" //nolint:gosec // a URN, not a credential
	GrantTypeClientCreds  = "client_credentials"
	ClientAssertionJWTURN = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// MaxBodyBytes bounds a token request: a form with a 4096-bit RS512 assertion is
// well under 8 KiB.
const MaxBodyBytes = 64 << 10

// TokenHandler serves POST /oauth2/token (RFC 6749 §3.2, RFC 7523 §2).
type TokenHandler struct {
	Exchanger *Exchanger
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// Log receives one audit line per request.
	Log logr.Logger
	// Metrics, when set, records each request.
	Metrics *Metrics
	// InFlight bounds the requests judged at once (nil: no bound); shared with
	// introspection.
	InFlight *InFlight
}

// ServeHTTP answers a token request: a token, or an RFC 6749 §5.2 error — never a 500
// for bad input.
func (h *TokenHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	form, err := h.readForm(w, r)
	grantType := form.Get("grant_type")
	addr := clientAddr(r, h.TrustedProxies)
	var resp *TokenResponse
	var out Outcome
	if err == nil {
		resp, out, err = h.judge(form, r, addr)
	}
	outcome := "issued"
	if err != nil {
		outcome = err.Code
		_, _, basic := r.BasicAuth()
		err.Write(w, basic)
	} else {
		writeJSON(w, http.StatusOK, resp)
	}
	h.audit(grantType, addr, out, outcome, err)
	if h.Metrics != nil {
		h.Metrics.Observe(grantType, outcome, time.Since(start))
		h.Metrics.ObserveDenied(out.Denied)
		if err != nil {
			h.Metrics.ObserveUnauthenticated(err.Cause)
		}
	}
}

// judge dispatches within an InFlight slot, released however dispatch ends.
func (h *TokenHandler) judge(form url.Values, r *http.Request, addr netip.Addr) (*TokenResponse, Outcome, *Error) {
	if x := h.Exchanger; x.Keys != nil && x.Keys() == nil {
		return nil, Outcome{}, errNoSigningKeys() // before any verification: nothing could be signed
	}
	if !h.InFlight.Acquire() {
		return nil, Outcome{}, errBusy()
	}
	defer h.InFlight.Release()
	return h.dispatch(form, r, addr)
}

// readForm enforces the transport rules: POST only (§3.2), form encoding, a body
// limit, and no repeated parameter (§3.2: parameters MUST NOT be included more than once).
func (h *TokenHandler) readForm(w http.ResponseWriter, r *http.Request) (url.Values, *Error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, &Error{Code: CodeInvalidRequest, Description: "the token endpoint accepts POST only", Status: http.StatusMethodNotAllowed}
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/x-www-form-urlencoded" {
		return nil, newError(CodeInvalidRequest, "the body must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &Error{Code: CodeInvalidRequest, Description: "the request body is too large", Status: http.StatusRequestEntityTooLarge}
		}
		return nil, newError(CodeInvalidRequest, "the body is not a valid form")
	}
	for name, values := range r.PostForm {
		if len(values) > 1 {
			return r.PostForm, newError(CodeInvalidRequest, "parameter "+safe(name)+" is repeated")
		}
	}
	if len(r.URL.Query()) > 0 {
		return r.PostForm, newError(CodeInvalidRequest, "parameters must be in the body, not the URL")
	}
	return r.PostForm, nil
}

// dispatch picks the grant handler (fosite's one handler per grant).
func (h *TokenHandler) dispatch(form url.Values, r *http.Request, addr netip.Addr) (*TokenResponse, Outcome, *Error) {
	switch form.Get("grant_type") {
	case "":
		return nil, Outcome{}, newError(CodeInvalidRequest, "grant_type is missing")
	case GrantTypeJWTBearer:
		if form.Get("assertion") == "" {
			return nil, Outcome{}, newError(CodeInvalidRequest, "assertion is missing (RFC 7523 section 2.1)")
		}
		return h.Exchanger.Exchange(Request{Assertion: form.Get("assertion"), Scope: form.Get("scope"), ClientAddr: addr, Code: CodeInvalidGrant})
	case GrantTypeClientCreds:
		return h.clientCredentials(form, r, addr)
	case GrantTypeRefreshToken:
		return h.refresh(form, r, addr)
	default:
		return nil, Outcome{}, newError(CodeUnsupportedGrantType, "grant_type "+safe(form.Get("grant_type"))+
			" is not supported; use "+GrantTypeJWTBearer+", client_credentials or refresh_token")
	}
}

// clientCredentials authenticates the client — with a JWT (RFC 7523 §2.2,
// private_key_jwt), or with a client secret by HTTP Basic or form (RFC 6749 §2.3.1),
// exactly one method per request — and issues a token for its own identity.
func (h *TokenHandler) clientCredentials(form url.Values, r *http.Request, addr netip.Addr) (*TokenResponse, Outcome, *Error) {
	basicID, basicSecret, basic, e := basicAuth(r)
	if e != nil {
		return nil, Outcome{}, e
	}
	hasAssertion := form.Get("client_assertion") != "" || form.Get("client_assertion_type") != ""
	hasFormSecret := form.Get("client_secret") != ""
	if methods := btoi(basic) + btoi(hasAssertion) + btoi(hasFormSecret); methods > 1 {
		return nil, Outcome{}, newError(CodeInvalidRequest, "use exactly one client authentication method (RFC 6749 section 2.3)")
	}
	switch {
	case basic:
		return h.Exchanger.ExchangeSecret(basicID, basicSecret, form.Get("scope"), addr)
	case hasFormSecret:
		return h.Exchanger.ExchangeSecret(form.Get("client_id"), form.Get("client_secret"), form.Get("scope"), addr)
	}
	if form.Get("client_assertion_type") != ClientAssertionJWTURN || form.Get("client_assertion") == "" {
		return nil, Outcome{}, newError(CodeInvalidClient, "client_credentials needs client_assertion_type="+
			ClientAssertionJWTURN+" and a client_assertion (RFC 7523 section 2.2)")
	}
	resp, out, err := h.Exchanger.Exchange(Request{Assertion: form.Get("client_assertion"), Scope: form.Get("scope"), ClientAddr: addr, Code: CodeInvalidClient})
	if err == nil && form.Get("client_id") != "" && form.Get("client_id") != out.ClientID {
		return nil, out, newError(CodeInvalidClient, "client_id does not match the client assertion's iss")
	}
	return resp, out, err
}

// refresh reads a refresh_token grant (RFC 6749 §6) and its client authentication: a
// client secret by HTTP Basic or form, or none (a client_id alone may be sent).
func (h *TokenHandler) refresh(form url.Values, r *http.Request, addr netip.Addr) (*TokenResponse, Outcome, *Error) {
	if form.Get("refresh_token") == "" {
		return nil, Outcome{}, newError(CodeInvalidRequest, "refresh_token is missing (RFC 6749 section 6)")
	}
	if form.Get("client_assertion") != "" || form.Get("client_assertion_type") != "" {
		return nil, Outcome{}, newError(CodeInvalidRequest, "a refresh authenticates with the client secret or not at all, not with a client assertion")
	}
	rr := RefreshRequest{Token: form.Get("refresh_token"), Scope: form.Get("scope"), ClientAddr: addr,
		ClientID: form.Get("client_id"), Secret: form.Get("client_secret"), HasSecret: form.Get("client_secret") != ""}
	basicID, basicSecret, basic, e := basicAuth(r)
	if e != nil {
		return nil, Outcome{}, e
	}
	if basic {
		if rr.HasSecret {
			return nil, Outcome{}, newError(CodeInvalidRequest, "use exactly one client authentication method (RFC 6749 section 2.3)")
		}
		if rr.ClientID != "" && rr.ClientID != basicID {
			return nil, Outcome{}, newError(CodeInvalidRequest, "the form's client_id is not the one of HTTP Basic")
		}
		// A public client may send its client_id with an empty password (x/oauth2 does).
		rr.ClientID, rr.Secret, rr.HasSecret = basicID, basicSecret, basicSecret != ""
	}
	return h.Exchanger.ExchangeRefresh(rr)
}

// basicAuth reads HTTP Basic client credentials, form-urlencoded first as RFC 6749
// §2.3.1 says (and golang.org/x/oauth2 does).
func basicAuth(r *http.Request) (id, secret string, ok bool, e *Error) {
	rawID, rawSecret, ok := r.BasicAuth()
	if !ok {
		return "", "", false, nil
	}
	id, err1 := url.QueryUnescape(rawID)
	secret, err2 := url.QueryUnescape(rawSecret)
	if err1 != nil || err2 != nil {
		return "", "", true, newError(CodeInvalidClient, "HTTP Basic credentials must be form-urlencoded (RFC 6749 section 2.3.1)")
	}
	return id, secret, true, nil
}

func (h *TokenHandler) audit(grantType string, addr netip.Addr, out Outcome, outcome string, err *Error) {
	kv := []any{"grant_type", safe(grantType), "client_id", out.ClientID, "key_id", out.KeyID, "subject", out.Subject,
		"scopes", out.Scopes, "client_addr", addr.String(), "outcome", outcome}
	if err != nil {
		kv = append(kv, "reason", err.auditReason())
	}
	h.Log.Info("token request", kv...)
}

// clientAddr is the address spec.allowedCIDRs is checked against: the peer's, unless
// the peer is a trusted proxy; then the rightmost X-Forwarded-For hop that is not a
// trusted proxy (or, when every hop is trusted, the leftmost). Only X-Forwarded-For
// counts (not Forwarded, not X-Real-IP). It fails closed: a trusted proxy that sends
// no X-Forwarded-For, or a hop that is not a bare IP address, yields the invalid
// address, which no allowedCIDRs contains.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	peer = peer.Unmap()
	if !inAny(trusted, peer) {
		return peer
	}
	values := r.Header.Values("X-Forwarded-For")
	if len(values) == 0 {
		return netip.Addr{}
	}
	hops := strings.Split(strings.Join(values, ","), ",")
	var a netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		if a, err = netip.ParseAddr(strings.TrimSpace(hops[i])); err != nil || a.Zone() != "" {
			return netip.Addr{}
		}
		if a = a.Unmap(); !inAny(trusted, a) {
			return a
		}
	}
	return a
}

func inAny(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
