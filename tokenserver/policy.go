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
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/servicekey-operator/servicekey-operator/api/policy"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// PolicyGate judges ServiceKeys against the ServiceKeyPolicies at every grant, from
// the token server's own watch of policies and namespace labels and the live spec in
// the index — never from the controller's verdict in status. A spec edit racing the
// controller, a stopped controller, a forged status or a policy tightened after
// issuance therefore never yields a token beyond what a policy allows now.
//
// Verdicts are cached per KeyRecord (a new record replaces the old one on every
// ServiceKey change) and invalidated by a generation counter that every policy or
// namespace event bumps, so the request path evaluates only after a change.
type PolicyGate struct {
	mu       sync.RWMutex
	policies map[string]policy.Policy
	nsLabels map[string]map[string]string
	gen      atomic.Uint64
}

// cachedVerdict is a record's verdict at a generation of the gate.
type cachedVerdict struct {
	gen     uint64
	verdict policy.Verdict
}

// NewPolicyGate returns a gate that knows no policy yet: it refuses everything until
// its informers deliver policies.
func NewPolicyGate() *PolicyGate {
	return &PolicyGate{policies: map[string]policy.Policy{}, nsLabels: map[string]map[string]string{}}
}

// Verdict judges rec's live spec now. A nil gate knows no policy and refuses.
func (g *PolicyGate) Verdict(rec *KeyRecord) policy.Verdict {
	if g == nil {
		return policy.Evaluate(rec.Request, nil, nil)
	}
	// The generation is read before the data: a verdict is never cached under a
	// generation newer than the policies and labels it was computed from.
	gen := g.gen.Load()
	if c := rec.verdict.Load(); c != nil && c.gen == gen {
		return c.verdict
	}
	g.mu.RLock()
	labels := g.nsLabels[rec.Request.Namespace]
	list := make([]policy.Policy, 0, len(g.policies))
	for _, p := range g.policies {
		list = append(list, p)
	}
	g.mu.RUnlock()
	v := policy.Evaluate(rec.Request, labels, list)
	rec.verdict.Store(&cachedVerdict{gen: gen, verdict: v})
	return v
}

// Check is Verdict as a token-endpoint error, nil when permitted: invalid_scope when
// only scopes are not allowed, unauthorized_client for anything else (RFC 6749 §5.2),
// and 503 temporarily_unavailable while the namespace's labels are not known yet
// (right after the namespace was created). keyIDs are the keys that may have verified
// the grant (nil for a client secret): each must be at least the minKeySize of the
// policies that permit the key, so an old, smaller key still in its grace period
// cannot outlive a policy that asks for larger keys.
func (g *PolicyGate) Check(rec *KeyRecord, keyIDs []string) (*Error, []policy.Kind) {
	v := g.Verdict(rec)
	switch {
	case v.UnknownNamespace:
		return &Error{Code: CodeTemporarilyUnavailable, Description: "the labels of namespace " + rec.Request.Namespace +
			" are not known to the token server yet; retry shortly", Status: http.StatusServiceUnavailable, RetryAfter: time.Second}, nil
	case !v.Allowed:
		code := CodeUnauthorizedClient
		if v.OnlyScopes() {
			code = CodeInvalidScope
		}
		return &Error{Code: code, Description: "ServiceKey " + rec.ClientID + " is refused by policy: " + v.Message(),
			Status: http.StatusBadRequest}, v.Kinds()
	}
	if id, bits := smallKey(rec, keyIDs, v.MinKeySize); id != "" {
		return &Error{Code: CodeUnauthorizedClient, Description: fmt.Sprintf("ServiceKey %s is refused by policy: key %s has %d bits, "+
			"below the minKeySize %d of the policies that permit it; use the key the Secret holds now", rec.ClientID, id, bits, v.MinKeySize),
			Status: http.StatusBadRequest}, []policy.Kind{policy.KindKeySize}
	}
	return nil, nil
}

// smallKey returns the first of keyIDs whose modulus is below minBits, and its size.
func smallKey(rec *KeyRecord, keyIDs []string, minBits int32) (string, int) {
	if minBits == 0 {
		return "", 0
	}
	for _, k := range rec.Keys {
		if slices.Contains(keyIDs, k.ID) && k.Key.N.BitLen() < int(minBits) {
			return k.ID, k.Key.N.BitLen()
		}
	}
	return "", 0
}

// PolicyHandler keeps the gate's policies current from the informer.
func (g *PolicyGate) PolicyHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { g.setPolicy(obj) },
		UpdateFunc: func(_, obj any) { g.setPolicy(obj) },
		DeleteFunc: func(obj any) {
			if p, ok := unwrapDeleted(obj).(*v1.ServiceKeyPolicy); ok {
				g.mu.Lock()
				delete(g.policies, p.Name)
				g.mu.Unlock()
				g.gen.Add(1)
			}
		},
	}
}

func (g *PolicyGate) setPolicy(obj any) {
	p, ok := obj.(*v1.ServiceKeyPolicy)
	if !ok {
		return
	}
	compiled := policy.Compile(p)
	g.mu.Lock()
	g.policies[p.Name] = compiled
	g.mu.Unlock()
	g.gen.Add(1)
}

// NamespaceHandler keeps the gate's namespace labels current from a metadata-only
// informer; only label changes invalidate verdicts.
func (g *PolicyGate) NamespaceHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { g.setNamespace(obj) },
		UpdateFunc: func(_, obj any) { g.setNamespace(obj) },
		DeleteFunc: func(obj any) {
			if m, ok := unwrapDeleted(obj).(*metav1.PartialObjectMetadata); ok {
				g.mu.Lock()
				delete(g.nsLabels, m.Name)
				g.mu.Unlock()
				g.gen.Add(1)
			}
		},
	}
}

func (g *PolicyGate) setNamespace(obj any) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	labels := maps.Clone(m.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	g.mu.Lock()
	old, known := g.nsLabels[m.Name]
	g.nsLabels[m.Name] = labels
	g.mu.Unlock()
	if !known || !maps.Equal(old, labels) {
		g.gen.Add(1)
	}
}

func unwrapDeleted(obj any) any {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}
