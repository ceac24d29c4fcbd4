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
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Server wires the endpoints: token, JWKS, RFC 8414 metadata, health and readiness.
type Server struct {
	// Issuer is the issuer identifier (RFC 8414 §2), e.g. https://token.example.com.
	Issuer string
	// TokenURL is the token endpoint's public URL.
	TokenURL string
	// Token serves the token endpoint.
	Token *TokenHandler
	// Synced reports whether the ServiceKey cache has synced.
	Synced func() bool
	// Introspect serves RFC 7662 introspection (nil: not served).
	Introspect *Introspector
	// API tracks contact with the API server, for /readyz (nil: not tracked).
	API *APIContact
	// State is the grants' state, whose Problem /readyz reports (nil: not reported).
	State State

	keys atomic.Pointer[SigningKeys]
	// keysDeleted says the keys were dropped because their Secret was deleted, for
	// /readyz to say why nothing is signed.
	keysDeleted atomic.Bool
	// draining: the replica is stopping (Running.Drain); /readyz answers 503.
	draining atomic.Bool
	// signingMu orders informer events against ResyncSigningKeys; signingEvents counts
	// the events and signingRV is the resourceVersion the keys were loaded from.
	signingMu     sync.Mutex
	signingEvents int
	signingRV     string
	log           logr.Logger
}

// InFlight bounds the token and introspection requests being judged at once. A slot
// is taken after the request body has been read (bounded by the body limit and the
// server's ReadTimeout), so slow senders cannot hold slots; beyond the bound the
// answer is 503 temporarily_unavailable with Retry-After: 1, at once.
type InFlight struct {
	max int64
	n   atomic.Int64
}

// NewInFlight admits at most n requests at once; n <= 0 means no bound (nil).
func NewInFlight(n int) *InFlight {
	if n <= 0 {
		return nil
	}
	return &InFlight{max: int64(n)}
}

// Acquire takes a slot, or says there is none; a nil InFlight always has one.
func (f *InFlight) Acquire() bool {
	if f == nil {
		return true
	}
	for {
		n := f.n.Load()
		if n >= f.max {
			return false
		}
		if f.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release gives back a slot taken by Acquire.
func (f *InFlight) Release() {
	if f != nil {
		f.n.Add(-1)
	}
}

// Len is the number of requests being judged now.
func (f *InFlight) Len() int64 {
	if f == nil {
		return 0
	}
	return f.n.Load()
}

// errBusy answers a request beyond the InFlight bound.
func errBusy() *Error {
	return &Error{Code: CodeTemporarilyUnavailable, Status: http.StatusServiceUnavailable, RetryAfter: time.Second,
		Description: "the token server is answering as many requests as it allows at once; retry shortly"}
}

// NewServer returns a server; its Exchanger reads the signing keys the server holds.
func NewServer(issuer, tokenURL string, token *TokenHandler, synced func() bool, log logr.Logger) *Server {
	s := &Server{Issuer: issuer, TokenURL: tokenURL, Token: token, Synced: synced, log: log}
	token.Exchanger.Keys = s.SigningKeys
	return s
}

// SigningKeys are the keys in use now (nil before the first load).
func (s *Server) SigningKeys() *SigningKeys { return s.keys.Load() }

// SetSigningKeys replaces the signing keys (rotation without restart).
func (s *Server) SetSigningKeys(ks *SigningKeys) { s.keys.Store(ks) }

// SigningSecretHandler loads the signing keys from every version of the signing-key
// Secret the informer delivers; a broken update keeps the previous keys. Deleting the
// Secret is the runbook for a compromised signing key, so a delete (a tombstone
// included: the informer watches that Secret only) drops the keys at once: token and
// introspection requests are answered 503 temporarily_unavailable with Retry-After, as
// before the first load, until a new Secret arrives.
func (s *Server) SigningSecretHandler() toolscache.ResourceEventHandler {
	load := func(obj any) {
		if secret, ok := obj.(*corev1.Secret); ok {
			s.signingMu.Lock()
			defer s.signingMu.Unlock()
			s.signingEvents++
			s.loadSigningKeys(secret)
		}
	}
	drop := func(obj any) {
		s.signingMu.Lock()
		defer s.signingMu.Unlock()
		s.signingEvents++
		s.dropSigningKeys(obj)
	}
	return toolscache.ResourceEventHandlerFuncs{AddFunc: load, UpdateFunc: func(_, obj any) { load(obj) }, DeleteFunc: drop}
}

// loadSigningKeys takes the keys of a version of the Secret; the caller holds signingMu.
func (s *Server) loadSigningKeys(secret *corev1.Secret) {
	ks, err := LoadSigningKeys(secret.Data)
	if err != nil {
		s.log.Error(err, "signing-key Secret unusable; keeping the previous keys", "secret", secret.Namespace+"/"+secret.Name)
		return
	}
	s.SetSigningKeys(ks)
	s.signingRV = secret.ResourceVersion
	s.keysDeleted.Store(false)
	s.log.Info("signing keys loaded", "current", ks.Current.ID, "alg", ks.Current.Alg, "published", len(ks.Others)+1)
}

// dropSigningKeys forgets the keys of a deleted signing-key Secret; the caller holds
// signingMu.
func (s *Server) dropSigningKeys(obj any) {
	name := ""
	switch o := obj.(type) {
	case *corev1.Secret:
		name = o.Namespace + "/" + o.Name
	case toolscache.DeletedFinalStateUnknown:
		name = o.Key
	}
	dropped := ""
	if ks := s.keys.Swap(nil); ks != nil {
		dropped = ks.Current.ID
	}
	s.signingRV = ""
	s.keysDeleted.Store(true)
	s.log.Info("signing-key Secret deleted: its keys are dropped and nothing is signed until a new Secret arrives; "+
		"token and introspection requests are answered 503", "secret", name, "droppedCurrent", dropped)
}

// ResyncSigningKeys reads the signing-key Secret live and takes it (or drops the keys
// when it is gone), for when the API server answers again after an outage: deleting
// that Secret is the runbook for a compromised signing key, and client-go's watch may
// resume a minute later. Whatever the informer delivered meanwhile wins.
func (s *Server) ResyncSigningKeys(ctx context.Context, reader client.Reader, ref types.NamespacedName) error {
	s.signingMu.Lock()
	before := s.signingEvents
	s.signingMu.Unlock()
	secret := &corev1.Secret{}
	err := reader.Get(ctx, ref, secret)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get signing-key Secret %s: %w", ref, err)
	}
	s.signingMu.Lock()
	defer s.signingMu.Unlock()
	switch {
	case s.signingEvents != before: // the informer was faster
	case err != nil:
		if s.keys.Load() != nil {
			s.dropSigningKeys(toolscache.DeletedFinalStateUnknown{Key: ref.String()})
		}
	case secret.ResourceVersion != s.signingRV:
		s.loadSigningKeys(secret)
	}
	return nil
}

// Handler routes the server's endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/oauth2/token", s.Token)
	if s.Introspect != nil {
		mux.Handle("/oauth2/introspect", s.Introspect)
	}
	mux.HandleFunc("GET /.well-known/jwks.json", s.jwks)
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.metadata)
	mux.HandleFunc("GET /.well-known/openid-configuration", s.metadata)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /readyz", s.readyz)
	return mux
}

// Ready is true once the ServiceKey cache has synced and a signing key has been
// loaded. It stays true when the signing-key Secret is deleted afterwards: every
// replica loses its keys at the same moment, and taking them all out of the Service
// would turn the handlers' 503 with Retry-After into refused connections. It also
// stays true while the API server does not answer (see APIContact): the caches still
// serve every key they hold, and all replicas lose the same API server at once; and
// while the shared state (Redis) does not answer, for the same reason.
func (s *Server) Ready() bool { return s.Synced() && (s.keys.Load() != nil || s.keysDeleted.Load()) }

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.draining.Load() {
		http.Error(w, "not ready: shutting down", http.StatusServiceUnavailable)
		return
	}
	if !s.Ready() {
		msg := "not ready: waiting for the ServiceKey cache and the signing key"
		if d := s.API.Degraded(); d != "" {
			msg += "; " + d
		}
		http.Error(w, msg, http.StatusServiceUnavailable)
		return
	}
	// Still 200 when degraded: what is missing is missing for every replica at once.
	var degraded []string
	if s.keys.Load() == nil {
		degraded = append(degraded, "the signing-key Secret was deleted; token and introspection requests are answered 503 until a new Secret arrives")
	}
	if d := s.API.Degraded(); d != "" {
		degraded = append(degraded, d)
	}
	if s.State != nil {
		if p := s.State.Problem(); p != "" {
			degraded = append(degraded, p)
		}
	}
	if len(degraded) == 0 {
		_, _ = w.Write([]byte("ok"))
		return
	}
	_, _ = w.Write([]byte("ok, degraded: " + strings.Join(degraded, "; ")))
}

// jwks serves the RFC 7517 key set: current, next and previous signing keys.
func (s *Server) jwks(w http.ResponseWriter, _ *http.Request) {
	ks := s.keys.Load()
	if ks == nil {
		http.Error(w, "no signing key loaded yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(ks.JWKS())
}

// Metadata is the RFC 8414 authorization server metadata document.
type Metadata struct {
	Issuer                     string   `json:"issuer"`
	TokenEndpoint              string   `json:"token_endpoint"`
	JWKSURI                    string   `json:"jwks_uri"`
	GrantTypesSupported        []string `json:"grant_types_supported"`
	ResponseTypesSupported     []string `json:"response_types_supported"`
	TokenEndpointAuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAl []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	IntrospectionEndpoint      string   `json:"introspection_endpoint,omitempty"`
}

func (s *Server) metadata(w http.ResponseWriter, _ *http.Request) {
	base := strings.TrimSuffix(s.Issuer, "/")
	introspection := ""
	if s.Introspect != nil {
		introspection = base + "/oauth2/introspect" // served beside jwks_uri, under the issuer
	}
	writeJSON(w, http.StatusOK, Metadata{
		IntrospectionEndpoint:      introspection,
		Issuer:                     s.Issuer,
		TokenEndpoint:              s.TokenURL,
		JWKSURI:                    base + "/.well-known/jwks.json",
		GrantTypesSupported:        []string{GrantTypeJWTBearer, GrantTypeClientCreds, GrantTypeRefreshToken},
		ResponseTypesSupported:     []string{}, // no authorization endpoint
		TokenEndpointAuthMethods:   []string{"private_key_jwt", "client_secret_basic", "client_secret_post"},
		TokenEndpointAuthSigningAl: AllowedAlgorithms,
	})
}
