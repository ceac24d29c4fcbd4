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
	keys         *prometheus.Desc
	expiry       *prometheus.Desc
	rotation     *prometheus.Desc
	reader       client.Reader
}

// NewMetrics creates the metrics; reader lists ServiceKeys (the manager's cache).
func NewMetrics(reader client.Reader) *Metrics {
	return &Metrics{
		Rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "servicekey_rotations_total",
			Help: "New key pairs issued, by cause (Initial, SecretMissing, SecretMismatch, PrivateKeyChanged, Requested, Scheduled).",
		}, []string{"cause"}),
		PolicyDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "servicekey_policy_denied_total",
			Help: "ServiceKeys that became refused by ServiceKeyPolicy, by what no policy allows (NoPolicy, Scope, Audience, Subject, KeySize, Validity, AccessTokenTTL, ClientSecret).",
		}, []string{"reason"}),
		keys: prometheus.NewDesc("servicekey_keys",
			"Published public keys by state (Active, Retiring).", []string{"state"}, nil),
		expiry: prometheus.NewDesc("servicekey_next_expiry_timestamp_seconds",
			"Earliest upcoming expiry of an Active key (Unix time); absent when no key expires.", nil, nil),
		rotation: prometheus.NewDesc("servicekey_next_rotation_timestamp_seconds",
			"Earliest upcoming automatic rotation (Unix time); absent when none is scheduled.", nil, nil),
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
	ch <- m.keys
	ch <- m.expiry
	ch <- m.rotation
}

// Collect implements prometheus.Collector from the ServiceKeys in the cache.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1.ServiceKeyList
	if err := m.reader.List(ctx, &list); err != nil {
		return // the cache is not started yet; report nothing rather than zeros
	}
	counts := map[v1.KeyState]float64{v1.KeyActive: 0, v1.KeyRetiring: 0}
	var nextExpiry, nextRotation time.Time
	earliest := func(cur *time.Time, t time.Time) {
		if cur.IsZero() || t.Before(*cur) {
			*cur = t
		}
	}
	for i := range list.Items {
		st := list.Items[i].Status
		for _, k := range st.Keys {
			counts[k.State]++
			if k.State == v1.KeyActive && k.NotAfter != nil {
				earliest(&nextExpiry, k.NotAfter.Time)
			}
		}
		if st.NextRotationTime != nil {
			earliest(&nextRotation, st.NextRotationTime.Time)
		}
	}
	for state, n := range counts {
		send(ch, m.keys, n, string(state))
	}
	if !nextExpiry.IsZero() {
		send(ch, m.expiry, float64(nextExpiry.Unix()))
	}
	if !nextRotation.IsZero() {
		send(ch, m.rotation, float64(nextRotation.Unix()))
	}
}

// send emits a gauge; a mismatch between desc and labels is a programming error that
// the metrics test catches, so it is dropped here rather than panicking a scrape.
func send(ch chan<- prometheus.Metric, desc *prometheus.Desc, v float64, labels ...string) {
	if m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, v, labels...); err == nil {
		ch <- m
	}
}
