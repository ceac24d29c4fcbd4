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
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

var metricsNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// metricKey is a ServiceKey created a day before metricsNow; set edits it.
func metricKey(name string, set func(sk *v1.ServiceKey)) v1.ServiceKey {
	sk := v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name,
		CreationTimestamp: metav1.NewTime(metricsNow.Add(-24 * time.Hour))}}
	if set != nil {
		set(&sk)
	}
	return sk
}

func expiresIn(d time.Duration) func(*v1.ServiceKey) {
	return func(sk *v1.ServiceKey) { sk.Spec.ExpiresAt = &metav1.Time{Time: metricsNow.Add(d)} }
}

func readyStatus(s metav1.ConditionStatus) func(*v1.ServiceKey) {
	return func(sk *v1.ServiceKey) {
		sk.Status.Conditions = []metav1.Condition{{Type: v1.ConditionReady, Status: s, Reason: "Test"}}
	}
}

func TestComputeGauges(t *testing.T) {
	cases := []struct {
		name       string
		items      []v1.ServiceKey
		nextExpiry time.Time         // zero: absent
		expiries   map[string]string // name -> RFC 3339 expiry; absent: no series
		ready      map[string]metav1.ConditionStatus
	}{
		{name: "no ServiceKeys"},
		{
			name:       "an expired key does not hide a later one",
			items:      []v1.ServiceKey{metricKey("old", expiresIn(-time.Hour)), metricKey("later", expiresIn(48*time.Hour))},
			nextExpiry: metricsNow.Add(48 * time.Hour),
			expiries:   map[string]string{"old": "2026-11-22T11:00:00Z", "later": "2026-11-24T12:00:00Z"},
		},
		{
			name:     "expiring at now is expired",
			items:    []v1.ServiceKey{metricKey("now", expiresIn(0))},
			expiries: map[string]string{"now": "2026-11-22T12:00:00Z"},
		},
		{
			name: "validity counts from creation; the earliest future expiry wins",
			items: []v1.ServiceKey{
				metricKey("validity", func(sk *v1.ServiceKey) { sk.Spec.Validity = &metav1.Duration{Duration: 30 * time.Hour} }),
				metricKey("week", expiresIn(7*24*time.Hour)),
			},
			nextExpiry: metricsNow.Add(6 * time.Hour),
			expiries:   map[string]string{"validity": "2026-11-22T18:00:00Z", "week": "2026-11-29T12:00:00Z"},
		},
		{
			name:  "never expires; Ready as reported, Unknown when not yet",
			items: []v1.ServiceKey{metricKey("ok", readyStatus(metav1.ConditionTrue)), metricKey("refused", readyStatus(metav1.ConditionFalse)), metricKey("new", nil)},
			ready: map[string]metav1.ConditionStatus{"ok": metav1.ConditionTrue, "refused": metav1.ConditionFalse, "new": metav1.ConditionUnknown},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := computeGauges(tc.items, metricsNow)
			if !g.nextExpiry.Equal(tc.nextExpiry) {
				t.Errorf("next expiry %v, want %v", g.nextExpiry, tc.nextExpiry)
			}
			expiries := map[string]string{}
			for _, o := range g.objects {
				if !o.expiry.IsZero() {
					expiries[o.name] = o.expiry.UTC().Format(time.RFC3339)
				}
				if want, ok := tc.ready[o.name]; ok && o.ready != want {
					t.Errorf("%s: ready %s, want %s", o.name, o.ready, want)
				}
			}
			if fmt.Sprint(expiries) != fmt.Sprint(nonNil(tc.expiries)) {
				t.Errorf("expiries %v, want %v", expiries, tc.expiries)
			}
		})
	}
}

// listReader serves fixed ServiceKeys and records whether List asked for no deep copy.
type listReader struct {
	items        []v1.ServiceKey
	noDeepCopies bool
}

func (r *listReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return errors.New("the metrics only list")
}

func (r *listReader) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	o := (&client.ListOptions{}).ApplyOptions(opts)
	r.noDeepCopies = o.UnsafeDisableDeepCopy != nil && *o.UnsafeDisableDeepCopy
	list.(*v1.ServiceKeyList).Items = r.items
	return nil
}

// TestCollect: the exposition at the injected clock's time, read from the cache
// without deep copies.
func TestCollect(t *testing.T) {
	r := &listReader{items: []v1.ServiceKey{
		metricKey("expired", func(sk *v1.ServiceKey) { expiresIn(-time.Hour)(sk); readyStatus(metav1.ConditionFalse)(sk) }),
		metricKey("soon", func(sk *v1.ServiceKey) {
			expiresIn(time.Hour)(sk)
			sk.Status.Conditions = []metav1.Condition{{Type: v1.ConditionSynced, Status: metav1.ConditionFalse, Reason: "Test"}}
		}),
	}}
	m := NewMetrics(r)
	m.Clock = clocktesting.NewFakeClock(metricsNow)
	want := fmt.Sprintf(`
# HELP servicekey_next_expiry_timestamp_seconds Earliest ServiceKey expiry still in the future (Unix time); ServiceKeys that already expired are left out (servicekey_expiration_timestamp_seconds has each one); absent when no ServiceKey expires later.
# TYPE servicekey_next_expiry_timestamp_seconds gauge
servicekey_next_expiry_timestamp_seconds %[2]d
# HELP servicekey_expiration_timestamp_seconds When the ServiceKey stops working (spec.expiresAt, or creation + spec.validity; Unix time), past or future; absent for ServiceKeys that never expire.
# TYPE servicekey_expiration_timestamp_seconds gauge
servicekey_expiration_timestamp_seconds{name="expired",namespace="team"} %[1]d
servicekey_expiration_timestamp_seconds{name="soon",namespace="team"} %[2]d
# HELP servicekey_ready_status The ServiceKey's Ready condition: 1 for its status (True, False or Unknown; Unknown when not reported yet), 0 for the others.
# TYPE servicekey_ready_status gauge
servicekey_ready_status{condition="False",name="expired",namespace="team"} 1
servicekey_ready_status{condition="True",name="expired",namespace="team"} 0
servicekey_ready_status{condition="Unknown",name="expired",namespace="team"} 0
servicekey_ready_status{condition="False",name="soon",namespace="team"} 0
servicekey_ready_status{condition="True",name="soon",namespace="team"} 0
servicekey_ready_status{condition="Unknown",name="soon",namespace="team"} 1
# HELP servicekey_synced_status The ServiceKey's Synced condition, as servicekey_ready_status: False while a write the spec needs is refused (a rotation may be stalled with Ready still True).
# TYPE servicekey_synced_status gauge
servicekey_synced_status{condition="False",name="expired",namespace="team"} 0
servicekey_synced_status{condition="True",name="expired",namespace="team"} 0
servicekey_synced_status{condition="Unknown",name="expired",namespace="team"} 1
servicekey_synced_status{condition="False",name="soon",namespace="team"} 1
servicekey_synced_status{condition="True",name="soon",namespace="team"} 0
servicekey_synced_status{condition="Unknown",name="soon",namespace="team"} 0
`, metricsNow.Add(-time.Hour).Unix(), metricsNow.Add(time.Hour).Unix())
	err := testutil.CollectAndCompare(m, strings.NewReader(want),
		"servicekey_next_expiry_timestamp_seconds", "servicekey_expiration_timestamp_seconds", "servicekey_ready_status",
		"servicekey_synced_status")
	if err != nil {
		t.Error(err)
	}
	if !r.noDeepCopies {
		t.Error("the metrics deep-copy every ServiceKey on each scrape")
	}
}
