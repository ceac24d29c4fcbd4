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

// Package tokenserver is the OAuth 2.0 token server: it exchanges JWT grants signed
// with ServiceKeys (RFC 7523) for short-lived JWT access tokens (RFC 9068).
package tokenserver

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"
)

// Error codes of RFC 6749 §5.2, plus RFC 6750 §3.1's invalid_token for introspection
// and resource servers.
const (
	CodeInvalidRequest       = "invalid_request"
	CodeInvalidClient        = "invalid_client"
	CodeInvalidGrant         = "invalid_grant"
	CodeUnauthorizedClient   = "unauthorized_client"
	CodeUnsupportedGrantType = "unsupported_grant_type"
	CodeInvalidScope         = "invalid_scope"
	// CodeTemporarilyUnavailable is defined for the authorization endpoint (RFC 6749
	// §4.1.2.1), not in §5.2's list for the token endpoint; it is used here, with 503 and
	// Retry-After, when the server cannot judge a request yet, as OAuth servers commonly do.
	CodeTemporarilyUnavailable = "temporarily_unavailable"
)

// Error is a token endpoint error response (RFC 6749 §5.2). Descriptions say what was
// wrong with the request in terms the client's developer can act on, and never quote
// an assertion, a secret or key material.
type Error struct {
	// Code is the RFC 6749 §5.2 `error` value.
	Code string `json:"error"`
	// Description is the human-readable `error_description` (§5.2: ASCII, no '"' or '\').
	Description string `json:"error_description,omitempty"`
	// Status is the HTTP status: 400, or 401 for invalid_client (§5.2), or 429/405.
	Status int `json:"-"`
	// RetryAfter, when positive, is sent as Retry-After (seconds) with a 429 or 503.
	RetryAfter time.Duration `json:"-"`
	// Reason, when set, is the precise reason for the audit line where Description is
	// kept generic for a caller that has not authenticated; Cause names it for metrics.
	Reason string `json:"-"`
	Cause  string `json:"-"`
	// familyEnded: a refresh whose caller held the family's current token ended it
	// (errRefreshKeyGone), so the caller may learn why.
	familyEnded bool
}

// auditReason is what the audit line says: the precise reason when there is one.
func (e *Error) auditReason() string {
	if e.Reason != "" {
		return e.Reason
	}
	return e.Description
}

// Error implements error.
func (e *Error) Error() string { return e.Code + ": " + e.Description }

func newError(code, description string) *Error {
	status := http.StatusBadRequest
	if code == CodeInvalidClient {
		status = http.StatusUnauthorized
	}
	return &Error{Code: code, Description: description, Status: status}
}

// Write sends the error as RFC 6749 §5.2 JSON with the no-store headers of §5.1. An
// invalid_client answer to a request that used HTTP Basic also carries
// WWW-Authenticate (§5.2).
func (e *Error) Write(w http.ResponseWriter, usedBasic bool) {
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	if e.Code == CodeInvalidClient && usedBasic {
		h.Set("WWW-Authenticate", `Basic realm="servicekey"`)
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(e)
}

// errNoSigningKeys answers while the server holds no signing keys: before the first
// load, or after the signing-key Secret was deleted (RFC 6749 section 5.2 has no code
// for it; temporarily_unavailable is the authorization endpoint's, and clients know
// it). Nothing is spent: no jti is recorded, no rate-limit token taken.
func errNoSigningKeys() *Error {
	return &Error{Code: CodeTemporarilyUnavailable, Status: http.StatusServiceUnavailable, RetryAfter: time.Second,
		Description: "the token server holds no signing keys (not loaded yet, or the signing-key Secret was deleted); retry shortly"}
}
