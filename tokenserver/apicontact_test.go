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
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// TestAPIContact walks probe outcomes through the tracker: what /readyz would say
// after each, and the last contact the metric exports.
func TestAPIContact(t *testing.T) {
	start := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	refused := errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")
	type step struct {
		err         error
		want        string // substring of Degraded(); "" means not degraded
		lastContact time.Time
	}
	cases := map[string][]step{
		"answers": {{nil, "", start}, {nil, "", start.Add(5 * time.Second)}},
		"never answered": {
			{refused, "has not answered since start;", time.Time{}},
		},
		"stops, then answers again": {
			{nil, "", start},
			{refused, "since 2026-11-23T12:00:00Z (5s ago)", start},
			{refused, "since 2026-11-23T12:00:00Z (10s ago)", start},
			{nil, "", start.Add(15 * time.Second)},
		},
	}
	for name, steps := range cases {
		t.Run(name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(start)
			var next error
			a := &APIContact{Probe: func(context.Context) error { return next }, Timeout: time.Second, Clock: clk, Log: logr.Discard()}
			for i, s := range steps {
				if i > 0 {
					clk.Step(5 * time.Second)
				}
				next = s.err
				a.Check(context.Background())
				got := a.Degraded()
				if (s.want == "") != (got == "") || !strings.Contains(got, s.want) {
					t.Errorf("step %d: Degraded() = %q, want %q", i, got, s.want)
				}
				if strings.Contains(got, "127.0.0.1") {
					t.Errorf("step %d: /readyz (unauthenticated) would tell the API server's address: %q", i, got)
				}
				if !a.LastContact().Equal(s.lastContact) {
					t.Errorf("step %d: LastContact() = %v, want %v", i, a.LastContact(), s.lastContact)
				}
			}
		})
	}
}

// TestReadyzAPIUnreachable: /readyz stays 200 while the API server does not answer and
// says what the server does not know, beside the signing-key message when both apply.
func TestReadyzAPIUnreachable(t *testing.T) {
	keys, err := LoadSigningKeys(map[string][]byte{SigningCurrent: ecPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		synced, keys, apiDown bool
		status                int
		want                  []string
	}{
		"all well":             {true, true, false, http.StatusOK, []string{"ok"}},
		"API server down":      {true, true, true, http.StatusOK, []string{"ok, degraded: the API server has not answered"}},
		"both":                 {true, false, true, http.StatusOK, []string{"signing-key Secret was deleted", "; the API server has not answered"}},
		"not synced, API down": {false, false, true, http.StatusServiceUnavailable, []string{"not ready", "the API server has not answered"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := NewServer("https://t", "https://t/oauth2/token", &TokenHandler{Exchanger: &Exchanger{}}, func() bool { return tc.synced }, logr.Discard())
			if tc.keys {
				s.SetSigningKeys(keys)
			} else if tc.synced {
				s.SetSigningKeys(keys)
				s.dropSigningKeys(nil)
			}
			s.API = &APIContact{Probe: func(context.Context) error {
				if tc.apiDown {
					return errors.New("connection refused")
				}
				return nil
			}, Timeout: time.Second, Clock: clocktesting.NewFakeClock(time.Now()), Log: logr.Discard()}
			s.API.Check(context.Background())
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			code, body := testenv.HTTPGet(srv.URL + "/readyz")
			if code != tc.status {
				t.Errorf("status %d, want %d (%q)", code, tc.status, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("body %q lacks %q", body, w)
				}
			}
		})
	}
}

// TestAPIContactCatchUp: when the API server answers again after failing, /readyz
// says the cache is not yet up to date until OnRecovered has succeeded, which is
// retried at each probe; a server that never failed runs nothing.
func TestAPIContactCatchUp(t *testing.T) {
	refused := errors.New("connection refused")
	cases := map[string]struct {
		probes   []error // probe outcomes in order
		resyncs  []error // OnRecovered outcomes in order
		calls    int
		catching bool
	}{
		"never failed":               {probes: []error{nil, nil}, calls: 0},
		"back, brought up to date":   {probes: []error{nil, refused, nil}, resyncs: []error{nil}, calls: 1},
		"back, resync fails":         {probes: []error{nil, refused, nil}, resyncs: []error{refused}, calls: 1, catching: true},
		"back, resync fails then ok": {probes: []error{nil, refused, nil, nil}, resyncs: []error{refused, nil}, calls: 2},
		"still down":                 {probes: []error{nil, refused, refused}, calls: 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var probe, calls int
			a := &APIContact{
				Probe: func(context.Context) error { probe++; return tc.probes[probe-1] },
				OnRecovered: func(context.Context) error {
					calls++
					return tc.resyncs[calls-1]
				},
				Timeout: time.Second, Clock: clocktesting.NewFakeClock(time.Now()), Log: logr.Discard(),
			}
			for range tc.probes {
				a.Check(context.Background())
			}
			if calls != tc.calls {
				t.Errorf("OnRecovered ran %d times, want %d", calls, tc.calls)
			}
			if got := strings.Contains(a.Degraded(), "not yet up to date"); got != tc.catching {
				t.Errorf("Degraded() = %q, want catching up = %v", a.Degraded(), tc.catching)
			}
		})
	}
}
