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
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
)

// APIContact tracks whether the token server reaches the API server its caches watch.
// Grants never wait for the API server: they are judged from the caches. While the API
// server does not answer, those caches stay as they were at the last contact, so a
// ServiceKey deleted or suspended since (or a policy narrowed since) is still honoured
// until the watches resume. /readyz says so, and the last-contact metric lets an
// alert say so, rather than the server pretending to know more than it does.
type APIContact struct {
	// Probe asks the API server whether it is ready; nil error means it answered 200.
	Probe func(ctx context.Context) error
	// Interval is the time between probes, Timeout the bound of one probe.
	Interval, Timeout time.Duration
	Clock             clock.PassiveClock
	Log               logr.Logger
	// OnRecovered brings the caches up to date when the API server answers again after
	// failing (nil: nothing to do); it is retried at every probe until it succeeds.
	OnRecovered func(ctx context.Context) error

	mu      sync.Mutex
	lastOK  time.Time // zero: never
	failing time.Time // first failed probe since the last success; zero: not failing
	// catchingUp: the API server answers again after failing, and OnRecovered has not
	// succeeded since.
	catchingUp bool
}

// Default probe settings: a stale cache is reported within about 10 s.
const (
	DefaultAPIProbeInterval = 5 * time.Second
	DefaultAPIProbeTimeout  = 5 * time.Second
)

// NewAPIContact probes the API server of cfg at GET /livez, which every client may
// read (the system:public-info-viewer role), every interval. /livez rather than
// /readyz: an API server that is shutting down or has one failing readiness check
// answers /readyz 500 while still serving the watches.
func NewAPIContact(cfg *rest.Config, interval, timeout time.Duration, clk clock.PassiveClock, log logr.Logger) (*APIContact, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create API server probe: %w", err)
	}
	rc := dc.RESTClient()
	probe := func(ctx context.Context) error {
		_, err := rc.Get().AbsPath("/livez").DoRaw(ctx)
		return err
	}
	return &APIContact{Probe: probe, Interval: interval, Timeout: timeout, Clock: clk, Log: log}, nil
}

// Run probes until ctx is done, the first probe at once.
func (a *APIContact) Run(ctx context.Context) {
	t := time.NewTicker(a.Interval)
	defer t.Stop()
	for {
		a.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check probes once and records the outcome; a change is logged once, not per probe.
// After a failure, the first success runs OnRecovered, bounded by catchUpTimeout.
// Call it from one goroutine (Run does).
func (a *APIContact) Check(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, a.Timeout)
	err := a.Probe(pctx)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: not the API server's fault
	}
	now := a.Clock.Now()
	a.mu.Lock()
	switch {
	case err == nil && !a.failing.IsZero():
		a.Log.Info("the API server answers again; bringing the ServiceKey cache up to date with what changed meanwhile",
			"unreachableFor", now.Sub(a.failing).Round(time.Second).String())
		a.failing = time.Time{}
		a.catchingUp = true
	case err != nil && a.failing.IsZero():
		a.failing = now
		a.Log.Info("the API server does not answer; grants are judged from the cache as of the last contact",
			"lastContact", a.lastOK, "error", err.Error())
	}
	if err == nil {
		a.lastOK = now
	}
	catchUp := err == nil && a.catchingUp
	a.mu.Unlock()
	if catchUp {
		a.catchUp(ctx)
	}
}

// catchUpTimeout bounds one OnRecovered run, so a hanging list cannot stop the probes.
const catchUpTimeout = time.Minute

// catchUp runs OnRecovered and, when it succeeds, ends the catching-up state.
func (a *APIContact) catchUp(ctx context.Context) {
	if a.OnRecovered != nil {
		ctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
		defer cancel()
		if err := a.OnRecovered(ctx); err != nil {
			a.Log.Error(err, "bring the ServiceKey cache up to date after the outage; retrying at the next probe")
			return
		}
	}
	a.mu.Lock()
	a.catchingUp = false
	a.mu.Unlock()
}

// LastContact is when the API server last answered (zero: never since start).
func (a *APIContact) LastContact() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastOK
}

// Degraded says, for /readyz, what the server does not know: that the API server does
// not answer, or that it answers again but the caches are not yet up to date. "" when
// neither (or before the first probe).
func (a *APIContact) Degraded() string {
	if a == nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case !a.failing.IsZero():
		since := "since start"
		if !a.lastOK.IsZero() {
			since = fmt.Sprintf("since %s (%s ago)", a.lastOK.UTC().Format(time.RFC3339), a.Clock.Now().Sub(a.lastOK).Round(time.Second))
		}
		return fmt.Sprintf("the API server has not answered %s; grants are judged from the cache as of then, "+
			"so ServiceKeys deleted or suspended and policies changed since are not seen until it answers", since)
	case a.catchingUp:
		return "the API server answers again, but the ServiceKey cache is not yet up to date with what changed while it did not; " +
			"until it is, ServiceKeys deleted or suspended meanwhile are still honoured"
	}
	return ""
}
