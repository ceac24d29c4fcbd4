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

package controllers

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// Metrics are the controller's Prometheus metrics. Gauges are computed from the cache
// at scrape time, so they can never drift from the objects they describe.
type Metrics struct {
	// Rotations counts new key pairs by cause (Initial, Scheduled, Requested, ...).
	Rotations *prometheus.CounterVec
	// PolicyDenied counts ServiceKeys turning refused by policy, by the kind of
	// privilege no policy allows (NoPolicy, Scope, Audience, Subject, KeySize, ...).
	PolicyDenied *prometheus.CounterVec
	// Clock decides which expiries are still ahead; injected so tests fix "now".
	Clock clock.PassiveClock

	keys       *prometheus.Desc
	expiry     *prometheus.Desc
	rotation   *prometheus.Desc
	expiration *prometheus.Desc
	ready      *prometheus.Desc
	synced     *prometheus.Desc
	reader     client.Reader
}

// readyStatuses are the values of servicekey_ready_status's condition label; exactly
// one is 1 per ServiceKey, as cert-manager's certmanager_certificate_ready_status does,
// so an alert can match on condition="False" alone.
var readyStatuses = []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown}

// NewMetrics creates the metrics; reader lists ServiceKeys (the manager's cache).
func NewMetrics(reader client.Reader) *Metrics {
	return &Metrics{
		Rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "servicekey_rotations_total",
			Help: "New key pairs issued, by cause (Initial, SecretMissing, SecretMismatch, PrivateKeyChanged, Requested, Scheduled, Resumed).",
		}, []string{"cause"}),
		PolicyDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "servicekey_policy_denied_total",
			Help: "ServiceKeys that became refused by ServiceKeyPolicy, by what no policy allows (NoPolicy, Scope, Audience, Subject, KeySize, Validity, AccessTokenTTL, ClientSecret).",
		}, []string{"reason"}),
		Clock: clock.RealClock{},
		keys: prometheus.NewDesc("servicekey_keys",
			"Published public keys by state (Pending, Active, Retiring).", []string{"state"}, nil),
		expiry: prometheus.NewDesc("servicekey_next_expiry_timestamp_seconds",
			"Earliest ServiceKey expiry still in the future (Unix time); ServiceKeys that already expired are left out "+
				"(servicekey_expiration_timestamp_seconds has each one); absent when no ServiceKey expires later.", nil, nil),
		rotation: prometheus.NewDesc("servicekey_next_rotation_timestamp_seconds",
			"Earliest upcoming automatic rotation (Unix time); absent when none is scheduled.", nil, nil),
		expiration: prometheus.NewDesc("servicekey_expiration_timestamp_seconds",
			"When the ServiceKey stops working (spec.expiresAt, or creation + spec.validity; Unix time), past or future; "+
				"absent for ServiceKeys that never expire.", []string{"namespace", "name"}, nil),
		ready: prometheus.NewDesc("servicekey_ready_status",
			"The ServiceKey's Ready condition: 1 for its status (True, False or Unknown; Unknown when not reported yet), 0 for the others.",
			[]string{"namespace", "name", "condition"}, nil),
		synced: prometheus.NewDesc("servicekey_synced_status",
			"The ServiceKey's Synced condition, as servicekey_ready_status: False while a write the spec needs is refused "+
				"(a rotation may be stalled with Ready still True).",
			[]string{"namespace", "name", "condition"}, nil),
		reader: reader,
	}
}

// Register adds the metrics to a registry (controller-runtime's metrics.Registry).
func (m *Metrics) Register(reg prometheus.Registerer) error {
	if err := reg.Register(m.Rotations); err != nil {
		return err
	}
	if err := reg.Register(m.PolicyDenied); err != nil {
		return err
	}
	return reg.Register(m)
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.keys, m.expiry, m.rotation, m.expiration, m.ready, m.synced} {
		ch <- d
	}
}

// Collect implements prometheus.Collector from the ServiceKeys in the cache. It lists
// without deep copies (the objects are the cache's own and only read here), so a
// scrape does not copy every ServiceKey's status.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1.ServiceKeyList
	if err := m.reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return // the cache is not started yet; report nothing rather than zeros
	}
	now := time.Now()
	if m.Clock != nil {
		now = m.Clock.Now()
	}
	g := computeGauges(list.Items, now)
	for state, n := range g.keys {
		send(ch, m.keys, n, string(state))
	}
	if !g.nextExpiry.IsZero() {
		send(ch, m.expiry, float64(g.nextExpiry.Unix()))
	}
	if !g.nextRotation.IsZero() {
		send(ch, m.rotation, float64(g.nextRotation.Unix()))
	}
	for _, o := range g.objects {
		if !o.expiry.IsZero() {
			send(ch, m.expiration, float64(o.expiry.Unix()), o.namespace, o.name)
		}
		for _, st := range readyStatuses {
			send(ch, m.ready, is(st, o.ready), o.namespace, o.name, string(st))
			send(ch, m.synced, is(st, o.synced), o.namespace, o.name, string(st))
		}
	}
}

// gauges are the values of one scrape.
type gauges struct {
	keys         map[v1.KeyState]float64
	nextExpiry   time.Time // zero: no ServiceKey expires after now
	nextRotation time.Time // zero: none scheduled
	objects      []objectGauges
}

// objectGauges are one ServiceKey's series.
type objectGauges struct {
	namespace, name string
	expiry          time.Time // zero: never expires
	ready, synced   metav1.ConditionStatus
}

// computeGauges derives the gauges from the ServiceKeys at now. An expiry at or before
// now does not count for nextExpiry: an expired ServiceKey would otherwise hold that
// gauge in the past forever, keep an "expiring soon" alert firing and hide every
// other ServiceKey's coming expiry.
func computeGauges(items []v1.ServiceKey, now time.Time) gauges {
	g := gauges{keys: map[v1.KeyState]float64{v1.KeyPending: 0, v1.KeyActive: 0, v1.KeyRetiring: 0}, objects: make([]objectGauges, 0, len(items))}
	earliest := func(cur *time.Time, t time.Time) {
		if cur.IsZero() || t.Before(*cur) {
			*cur = t
		}
	}
	for i := range items {
		sk := &items[i]
		for _, k := range sk.Status.Keys {
			g.keys[k.State]++
		}
		if sk.Status.NextRotationTime != nil {
			earliest(&g.nextRotation, sk.Status.NextRotationTime.Time)
		}
		o := objectGauges{namespace: sk.Namespace, name: sk.Name, ready: conditionOf(sk, v1.ConditionReady),
			synced: conditionOf(sk, v1.ConditionSynced)}
		if exp := expiry(sk); exp != nil {
			o.expiry = *exp
			if exp.After(now) {
				earliest(&g.nextExpiry, *exp)
			}
		}
		g.objects = append(g.objects, o)
	}
	return g
}

// conditionOf is the status of condition typ, Unknown when not reported yet.
func conditionOf(sk *v1.ServiceKey, typ string) metav1.ConditionStatus {
	if c := meta.FindStatusCondition(sk.Status.Conditions, typ); c != nil && c.Status != "" {
		return c.Status
	}
	return metav1.ConditionUnknown
}

// is is 1 when a status is the current one, else 0.
func is(st, current metav1.ConditionStatus) float64 {
	if st == current {
		return 1
	}
	return 0
}

// send emits a gauge; a mismatch between desc and labels is a programming error that
// the metrics test catches, so it is dropped here rather than panicking a scrape.
func send(ch chan<- prometheus.Metric, desc *prometheus.Desc, v float64, labels ...string) {
	if m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, v, labels...); err == nil {
		ch <- m
	}
}
