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
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// RBAC of the token server: ServiceKeys read; status patched for lastUsedTime; its
// one signing-key Secret read by name, at the default DefaultSigningSecret (the Helm
// chart templates namespace and name) — no other Secret.
//
// +kubebuilder:rbac:groups=auth.servicekey.dev,resources=servicekeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.servicekey.dev,resources=servicekeys/status,verbs=patch
// +kubebuilder:rbac:groups=auth.servicekey.dev,resources=servicekeypolicies,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=list;watch
// +kubebuilder:rbac:groups="",namespace=servicekey-system,resources=secrets,resourceNames=servicekey-token-signing,verbs=get;list;watch

// DefaultSigningSecret is the signing-key Secret the generated RBAC names.
const DefaultSigningSecret = "servicekey-system/servicekey-token-signing" //nolint:gosec // an object reference, not a credential

// Options configure a token server.
type Options struct {
	Issuer          string
	TokenURL        string // default: Issuer + /oauth2/token
	Listen          string
	SigningSecret   types.NamespacedName
	Namespaces      []string // empty: all
	MaxTTL          time.Duration
	DefaultAudience []string
	TrustedProxies  []netip.Prefix
	// ReplayCacheSize bounds the assertions the replay cache holds; ReplayPerClient
	// bounds one client's share of it.
	ReplayCacheSize int
	ReplayPerClient int
	// SharedState is the redis:// or rediss:// URL of the state the replicas share
	// (replay, rate limits, refresh tokens); "" keeps it in this replica's memory.
	// SharedStatePassword, when set, replaces the URL's password.
	SharedState         string
	SharedStatePassword string
	// RefreshFamiliesPerClient bounds one client's live refresh-token families
	// (0: DefaultFamiliesPerClient).
	RefreshFamiliesPerClient int
	// RateLimit is token requests per second per client (0: off), RateBurst its burst.
	RateLimit float64
	RateBurst int
	// LastUsedGranularity: status.lastUsedTime is written at most this often per key.
	LastUsedGranularity time.Duration
	// IntrospectionScope is the scope callers of /oauth2/introspect need
	// (default DefaultIntrospectionScope).
	IntrospectionScope string
	// IntrospectionRateLimit is introspection requests per second per caller (0: off),
	// IntrospectionRateBurst its burst.
	IntrospectionRateLimit float64
	IntrospectionRateBurst int
	// MaxInFlight bounds the token and introspection requests answered at once (0: no bound).
	MaxInFlight int
	// MetricsListen serves Prometheus /metrics ("": off).
	MetricsListen string
	// APIProbeInterval is how often the API server is asked whether it answers, for
	// /readyz and the last-contact metric (0: DefaultAPIProbeInterval).
	APIProbeInterval time.Duration
	Clock            clock.PassiveClock
	Log              logr.Logger
}

// Running is a started token server.
type Running struct {
	Server *Server
	Index  *Index
	// Addr is the address the listener is bound to.
	Addr net.Addr
	// MetricsAddr is the metrics listener's address (nil: no metrics listener).
	MetricsAddr net.Addr

	servers []*http.Server
	stopped sync.WaitGroup
}

// Drain prepares this replica to stop without failing a client: /readyz answers 503,
// so the Service's endpoints drop the replica, and every response closes its
// connection, so clients reconnect to a replica that stays. It returns after delay
// (or when ctx is done), long enough for the endpoint change to reach every node;
// the listeners keep accepting until then, because until then the Service may still
// send connections here. Cancel Start's context afterwards and call Wait.
func (r *Running) Drain(ctx context.Context, delay time.Duration) {
	r.Server.draining.Store(true)
	for _, hs := range r.servers {
		hs.SetKeepAlivesEnabled(false)
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Wait returns once the listeners are closed and the requests in flight answered (at
// most ShutdownTimeout after Start's context is done).
func (r *Running) Wait() { r.stopped.Wait() }

// ShutdownTimeout bounds how long requests in flight may take once the listeners close.
const ShutdownTimeout = 5 * time.Second

// Start starts the caches and the HTTP listener; both stop when ctx is done.
func Start(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, o Options) (*Running, error) {
	o.TokenURL = cmp.Or(o.TokenURL, o.Issuer+"/oauth2/token")
	o.IntrospectionScope = cmp.Or(o.IntrospectionScope, DefaultIntrospectionScope)
	if err := checkOptions(o); err != nil {
		return nil, err
	}
	c, err := cache.New(cfg, cacheOptions(scheme, o))
	if err != nil {
		return nil, fmt.Errorf("create cache: %w", err)
	}
	ix := NewIndex(o.Log.WithName("index"))
	writer, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}
	used := NewLastUsed(writer, o.LastUsedGranularity, o.Clock, o.Log.WithName("last-used"))
	go used.Run(ctx)
	api, err := NewAPIContact(cfg, cmp.Or(o.APIProbeInterval, DefaultAPIProbeInterval), DefaultAPIProbeTimeout,
		o.Clock, o.Log.WithName("api-contact"))
	if err != nil {
		return nil, err
	}
	reg, err := newRegistry()
	if err != nil {
		return nil, err
	}
	metrics, err := NewMetrics(reg, ix, api)
	if err != nil {
		return nil, err
	}
	state, err := newState(ctx, o, reg, ix)
	if err != nil {
		return nil, err
	}
	introLimiter := NewLimiter(o.IntrospectionRateLimit, o.IntrospectionRateBurst)
	ix.OnDelete(introLimiter.Forget, used.Forget)
	gate := NewPolicyGate()
	th := &TokenHandler{Exchanger: newExchanger(o, state, used, gate, ix), TrustedProxies: o.TrustedProxies, Log: o.Log.WithName("audit"), Metrics: metrics}
	var synced atomic.Bool
	srv := NewServer(o.Issuer, o.TokenURL, th, synced.Load, o.Log)
	srv.API, srv.State = api, state
	api.OnRecovered = catchUp(srv, ix, writer, o)
	th.InFlight = NewInFlight(o.MaxInFlight)
	srv.Introspect = &Introspector{Issuer: o.Issuer, Scope: o.IntrospectionScope, Keys: srv.SigningKeys, Lookup: ix,
		Policies: gate, DefaultAudience: o.DefaultAudience, MaxTTL: o.MaxTTL, Clock: o.Clock,
		Limiter: introLimiter, Log: o.Log.WithName("audit"), InFlight: th.InFlight}
	err = startCache(ctx, c, map[client.Object]toolscache.ResourceEventHandler{
		&v1.ServiceKey{}:       ix.Handler(),
		&v1.ServiceKeyPolicy{}: gate.PolicyHandler(),
		policy.Namespace():     gate.NamespaceHandler(),
		&corev1.Secret{}:       srv.SigningSecretHandler(),
	})
	if err != nil {
		return nil, err
	}
	synced.Store(true)
	go api.Run(ctx) // after the sync: a catch-up needs a complete index to compare with
	running, err := listen(ctx, o, srv, ix, reg)
	closeAfter(ctx, state, running)
	return running, err
}

// newExchanger wires the grant exchange (RFC 7523 §3, RFC 6749 §6): assertions must
// be addressed to the token URL or the issuer and live at most an hour.
func newExchanger(o Options, state State, used *LastUsed, gate *PolicyGate, ix *Index) *Exchanger {
	return &Exchanger{
		State: state, Used: used, Policies: gate,
		Issuer: o.Issuer, DefaultAudience: o.DefaultAudience, MaxTTL: o.MaxTTL,
		Policy: AssertionPolicy{Audiences: []string{o.TokenURL, o.Issuer}, MaxLifetime: time.Hour, Leeway: time.Minute},
		Lookup: ix, Clock: o.Clock, NewID: randomID,
	}
}

// newRegistry is the metrics registry with the Go runtime and process series (heap,
// RSS, open files), as every controller-runtime manager exposes them: what a memory
// alert is written against.
func newRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("register Go metrics: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("register process metrics: %w", err)
	}
	return reg, nil
}

// checkOptions refuses options Start cannot run with.
func checkOptions(o Options) error {
	if o.ReplayCacheSize < 1 || o.ReplayPerClient < 1 {
		return errors.New("the replay cache needs a size and a per-client share of at least 1")
	}
	if o.APIProbeInterval < 0 {
		return fmt.Errorf("the API server probe interval must not be negative, got %v", o.APIProbeInterval)
	}
	return nil
}

// listen serves the token server and, when configured, its metrics.
func listen(ctx context.Context, o Options, srv *Server, ix *Index, reg *prometheus.Registry) (*Running, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", o.Listen, err)
	}
	running := &Running{Server: srv, Index: ix, Addr: ln.Addr()}
	running.serve(ctx, ln, srv.Handler())
	if o.MetricsListen != "" {
		mln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", o.MetricsListen)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", o.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		running.serve(ctx, mln, mux)
		running.MetricsAddr = mln.Addr()
	}
	return running, nil
}

// serve runs an HTTP server on ln until ctx is done.
func (r *Running) serve(ctx context.Context, ln net.Listener, h http.Handler) {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second}
	r.servers = append(r.servers, hs)
	r.stopped.Add(1)
	go func() { _ = hs.Serve(ln) }()
	go func() {
		defer r.stopped.Done()
		<-ctx.Done()
		// ctx is done: shutting down needs a fresh deadline of its own.
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
		defer cancel()
		_ = hs.Shutdown(shutdown)
	}()
}

// cacheOptions: ServiceKeys slimmed to what grant validation reads (SlimServiceKey),
// in the configured namespaces; nothing with managedFields; Secrets limited to the
// one signing-key Secret by name.
func cacheOptions(scheme *runtime.Scheme, o Options) cache.Options {
	opts := cache.Options{
		Scheme:           scheme,
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&v1.ServiceKey{}: {Transform: SlimServiceKey},
			&corev1.Secret{}: {
				Namespaces: map[string]cache.Config{o.SigningSecret.Namespace: {}},
				Field:      fields.OneTermEqualSelector("metadata.name", o.SigningSecret.Name),
			},
		},
	}
	if len(o.Namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range o.Namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// SlimServiceKey is the cache transform of ServiceKeys: it keeps what NewKeyRecord
// and the policies read (identity, the spec but its Secret template, the public keys
// and the client secret's hash) and drops the rest (conditions, annotations such as
// kubectl's last-applied-configuration, labels, owner references, managedFields),
// which would otherwise be held once per ServiceKey for nothing.
func SlimServiceKey(obj any) (any, error) {
	sk, ok := obj.(*v1.ServiceKey)
	if !ok {
		return obj, nil
	}
	slim := &v1.ServiceKey{TypeMeta: sk.TypeMeta, Spec: sk.Spec}
	slim.Name, slim.Namespace, slim.UID = sk.Name, sk.Namespace, sk.UID
	slim.ResourceVersion, slim.Generation = sk.ResourceVersion, sk.Generation
	slim.CreationTimestamp, slim.DeletionTimestamp = sk.CreationTimestamp, sk.DeletionTimestamp
	slim.Spec.SecretTemplate = nil
	slim.Status.ClientSecretHash = sk.Status.ClientSecretHash
	slim.Status.Keys = sk.Status.Keys
	return slim, nil
}

// startCache registers the handlers, starts the cache and waits until every informer
// has synced and every handler has received the initial list: the server answers
// nothing before its index, policies and namespace labels are complete.
func startCache(ctx context.Context, c cache.Cache, handlers map[client.Object]toolscache.ResourceEventHandler) error {
	var synced []toolscache.InformerSynced
	for obj, h := range handlers {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", obj, err)
		}
		reg, err := inf.AddEventHandler(h)
		if err != nil {
			return fmt.Errorf("event handler for %T: %w", obj, err)
		}
		synced = append(synced, reg.HasSynced)
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) || !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		return errors.New("the ServiceKey, ServiceKeyPolicy, Namespace and signing-key caches did not sync")
	}
	return nil
}

// catchUp brings what the outage may have left stale up to date from live reads: the
// signing-key Secret (its deletion is the compromise runbook), then the ServiceKeys.
// Policies and namespace labels wait for their watches (docs/tokenserver.md).
func catchUp(srv *Server, ix *Index, reader client.Reader, o Options) func(context.Context) error {
	keys := resyncKeys(ix, reader, o.Namespaces, o.Log.WithName("index"))
	return func(ctx context.Context) error {
		if err := srv.ResyncSigningKeys(ctx, reader, o.SigningSecret); err != nil {
			return err
		}
		return keys(ctx)
	}
}

// resyncPage is how many ServiceKeys the catch-up list asks for at once.
const resyncPage = 500

// resyncKeys lists the served ServiceKeys from the API server, page by page, and
// brings the index up to date with them (Index.StartResync): run when the API server
// answers again after an outage, so deletes and suspensions made meanwhile take effect
// at once instead of after client-go's watch retry backoff. A continue token that has
// expired (410) fails the run; the next probe starts over.
func resyncKeys(ix *Index, reader client.Reader, namespaces []string, log logr.Logger) func(context.Context) error {
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	return func(ctx context.Context) error {
		resync := ix.StartResync()
		listed := 0
		for _, ns := range namespaces {
			next := ""
			for {
				page := &v1.ServiceKeyList{} // a fresh list per page: decoding merges into what is there
				if err := reader.List(ctx, page, client.InNamespace(ns), client.Limit(resyncPage), client.Continue(next)); err != nil {
					return fmt.Errorf("list ServiceKeys in %q: %w", ns, err)
				}
				resync.Apply(page.Items)
				listed += len(page.Items)
				if next = page.Continue; next == "" {
					break
				}
			}
		}
		updated, deleted := resync.Finish()
		log.Info("index brought up to date after the API server outage", "listed", listed, "updated", updated, "deleted", deleted)
		return nil
	}
}

// randomID is a 128-bit random token ID (jti).
func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
