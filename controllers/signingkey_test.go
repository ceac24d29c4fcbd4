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
	"fmt"
	"testing"
	"time"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
)

func TestPlanSigningKeys(t *testing.T) {
	p := SigningPolicy{Algorithm: "ES256", Every: 24 * time.Hour, MaxTokenTTL: time.Hour}
	t0 := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	keys := func(names ...string) map[string][]byte {
		m := map[string][]byte{}
		for _, n := range names {
			m[n] = []byte("key-" + n)
		}
		return m
	}
	cur, next, prev := keyutil.SigningCurrent, keyutil.SigningNext, keyutil.SigningPrevious
	cases := map[string]struct {
		data        map[string][]byte
		rotatedAt   time.Time
		now         time.Time
		want        map[string]string // data key -> "key-<origin>" or "new"
		wantChanged bool
		wantRequeue time.Duration
	}{
		"empty: current and next": {nil, time.Time{}, t0, map[string]string{cur: "new", next: "new"}, true, 24 * time.Hour},
		"steady":                  {keys(cur, next), t0, t0.Add(time.Hour), map[string]string{cur: "key-" + cur, next: "key-" + next}, false, 23 * time.Hour},
		"next missing":            {keys(cur), t0, t0.Add(time.Hour), map[string]string{cur: "key-" + cur, next: "new"}, true, 23 * time.Hour},
		"rotation due": {keys(cur, next), t0, t0.Add(24 * time.Hour),
			map[string]string{prev: "key-" + cur, cur: "key-" + next, next: "new"}, true, time.Hour + time.Minute},
		"previous still needed": {keys(cur, next, prev), t0, t0.Add(30 * time.Minute),
			map[string]string{prev: "key-" + prev, cur: "key-" + cur, next: "key-" + next}, false, 31 * time.Minute},
		"previous expired": {keys(cur, next, prev), t0, t0.Add(time.Hour + time.Minute),
			map[string]string{cur: "key-" + cur, next: "key-" + next}, true, 23*time.Hour - time.Minute},
		"unknown rotation time": {keys(cur, next), time.Time{}, t0, map[string]string{cur: "key-" + cur, next: "key-" + next}, true, 24 * time.Hour},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			n := 0
			gen := func() ([]byte, error) { n++; return []byte(fmt.Sprintf("new-%d", n)), nil }
			plan, err := PlanSigningKeys(tc.data, tc.rotatedAt, tc.now, p, gen)
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.Data) != len(tc.want) {
				t.Errorf("data keys %d, want %d", len(plan.Data), len(tc.want))
			}
			for k, w := range tc.want {
				got := string(plan.Data[k])
				if w == "new" && (len(got) < 4 || got[:4] != "new-") || w != "new" && got != w {
					t.Errorf("%s = %q, want %s", k, got, w)
				}
			}
			if plan.Changed != tc.wantChanged || plan.RequeueAfter != tc.wantRequeue {
				t.Errorf("changed %v requeue %v, want %v %v", plan.Changed, plan.RequeueAfter, tc.wantChanged, tc.wantRequeue)
			}
		})
	}
}
