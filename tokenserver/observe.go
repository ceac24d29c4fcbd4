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
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// Limiter is a per-client token bucket (golang.org/x/time/rate). It is consulted after
// the assertion verified, so nobody can spend another client's budget by naming it.
type Limiter struct {
	mu      sync.Mutex
	perSec  rate.Limit
	burst   int
	clients map[string]*rate.Limiter
}

// NewLimiter allows perSecond requests per client with the given burst; perSecond <= 0
// disables limiting (nil Limiter).
func NewLimiter(perSecond float64, burst int) *Limiter {
	if perSecond <= 0 {
		return nil
	}
	return &Limiter{perSec: rate.Limit(perSecond), burst: max(burst, 1), clients: map[string]*rate.Limiter{}}
}

// Forget drops a client's bucket (its ServiceKey was deleted).
func (l *Limiter) Forget(clientID string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	delete(l.clients, clientID)
	l.mu.Unlock()
}

// Allow reports whether a client may get a token at now, and otherwise how long to wait.
func (l *Limiter) Allow(clientID string, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	lim, ok := l.clients[clientID]
	if !ok {
		lim = rate.NewLimiter(l.perSec, l.burst)
		l.clients[clientID] = lim
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Metrics are the token server's Prometheus metrics.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	denied   *prometheus.CounterVec
	unauth   *prometheus.CounterVec
}

// NewMetrics registers the metrics, with the number of indexed ServiceKeys read from ix
// and the last contact with the API server from api (nil: not exported).
func NewMetrics(reg prometheus.Registerer, ix *Index, api *APIContact) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "servicekey_token_requests_total",
			Help: "Token requests by grant type and outcome (issued, or the RFC 6749 error code).",
		}, []string{"grant_type", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "servicekey_token_request_duration_seconds",
			Help:    "Time to answer a token request.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"grant_type"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "servicekey_policy_denied_total",
			Help: "Grants refused by ServiceKeyPolicy, by what no policy allows (NoPolicy, Scope, Audience, Subject, KeySize, Validity, AccessTokenTTL, ClientSecret).",
		}, []string{"reason"}),
		unauth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "servicekey_token_unauthenticated_total",
			Help: "Requests refused before the caller authenticated, by cause (unknown_client, key_not_usable, bad_signature, bad_secret); the caller is told only a generic reason.",
		}, []string{"cause"}),
	}
	keys := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "servicekey_token_keys_indexed", Help: "ServiceKeys in the token server's index.",
	}, func() float64 { return float64(ix.Len()) })
	collectors := []prometheus.Collector{m.requests, m.latency, m.denied, m.unauth, keys}
	if api != nil {
		collectors = append(collectors, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "servicekey_token_api_server_last_contact_timestamp_seconds",
			Help: "When the API server last answered this token server's probe (Unix seconds; 0: never). " +
				"Grants are judged from the cache as of then.",
		}, func() float64 {
			if t := api.LastContact(); !t.IsZero() {
				return float64(t.Unix())
			}
			return 0
		}), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "servicekey_token_cache_stale",
			Help: "1 while the API server does not answer the probe, or answers again but the ServiceKey cache " +
				"has not been brought up to date yet; deletions and suspensions made meanwhile are not seen.",
		}, func() float64 {
			if api.Degraded() != "" {
				return 1
			}
			return 0
		}))
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register token server metrics: %w", err)
		}
	}
	return m, nil
}

// Observe records one request. The grant type is client input: anything but the
// supported types is counted as "other", so labels stay bounded.
func (m *Metrics) Observe(grantType, outcome string, took time.Duration) {
	switch grantType {
	case GrantTypeJWTBearer:
		grantType = "jwt-bearer"
	case GrantTypeClientCreds, GrantTypeRefreshToken:
	default:
		grantType = "other"
	}
	m.requests.WithLabelValues(grantType, outcome).Inc()
	m.latency.WithLabelValues(grantType).Observe(took.Seconds())
}

// ObserveUnauthenticated counts a refusal before authentication by its cause.
func (m *Metrics) ObserveUnauthenticated(cause string) {
	if cause != "" {
		m.unauth.WithLabelValues(cause).Inc()
	}
}

// ObserveDenied counts a grant refused by policy, once per kind of privilege.
func (m *Metrics) ObserveDenied(kinds []policy.Kind) {
	for _, k := range kinds {
		m.denied.WithLabelValues(string(k)).Inc()
	}
}

// LastUsed writes status.lastUsedTime of ServiceKeys, at most once per Granularity per
// key, from a background goroutine: the request path only drops a note in a channel.
type LastUsed struct {
	Client      client.Client
	Granularity time.Duration
	Clock       clock.PassiveClock
	Log         logr.Logger

	mu      sync.Mutex
	written map[string]time.Time
	queue   chan string
}

// FieldOwnerTokenServer is the field manager of lastUsedTime.
const FieldOwnerTokenServer = "servicekey-token-server"

// Note records that clientID was used now; it never blocks.
func (u *LastUsed) Note(clientID string) {
	if u == nil {
		return
	}
	now := u.Clock.Now()
	u.mu.Lock()
	if last, ok := u.written[clientID]; ok && now.Sub(last) < u.Granularity {
		u.mu.Unlock()
		return
	}
	u.written[clientID] = now
	u.mu.Unlock()
	select {
	case u.queue <- clientID:
	default: // busy: the next use will note it again after the granularity
	}
}

// Forget drops what is remembered of a client (its ServiceKey was deleted).
func (u *LastUsed) Forget(clientID string) {
	if u == nil {
		return
	}
	u.mu.Lock()
	delete(u.written, clientID)
	u.mu.Unlock()
}

// Run writes noted uses until ctx is done.
func (u *LastUsed) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-u.queue:
			if err := u.write(ctx, id); err != nil {
				u.Log.Error(err, "write lastUsedTime", "client_id", id)
			}
		}
	}
}

func (u *LastUsed) write(ctx context.Context, clientID string) error {
	namespace, name, _ := strings.Cut(clientID, "/")
	obj := &unstructured.Unstructured{Object: map[string]any{
		"status": map[string]any{"lastUsedTime": metav1.NewTime(u.Clock.Now()).UTC().Format(time.RFC3339)},
	}}
	obj.SetGroupVersionKind(v1.GroupVersion.WithKind("ServiceKey"))
	obj.SetNamespace(namespace)
	obj.SetName(name)
	return client.IgnoreNotFound(u.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(obj),
		client.FieldOwner(FieldOwnerTokenServer), client.ForceOwnership))
}

// NewLastUsed returns a writer with a bounded queue.
func NewLastUsed(c client.Client, granularity time.Duration, clk clock.PassiveClock, log logr.Logger) *LastUsed {
	return &LastUsed{Client: c, Granularity: granularity, Clock: clk, Log: log, written: map[string]time.Time{}, queue: make(chan string, 1024)}
}
