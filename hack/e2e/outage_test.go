//go:build e2e

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

package e2e

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// outage is how long the API server stays stopped.
const outage = 30 * time.Second

// notAnswered is what the token server's /readyz says while the API server is away.
const notAnswered = "the API server has not answered"

// grantLog records the outcome of every grant of one key file.
type grantLog struct {
	mu       sync.Mutex
	outcomes []grantOutcome
}

func (g *grantLog) add(o grantOutcome) {
	g.mu.Lock()
	g.outcomes = append(g.outcomes, o)
	g.mu.Unlock()
}

// count is the number of outcomes in [from, to) for which keep is true.
func (g *grantLog) count(from, to time.Time, keep func(status int) bool) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, o := range g.outcomes {
		if !o.at.Before(from) && o.at.Before(to) && keep(o.status) {
			n++
		}
	}
	return n
}

func issued(status int) bool { return status == http.StatusOK }

// flowGrants exchanges a fresh assertion of each key file every 250 ms (below the
// chart's per-client rate limit) until the test ends.
func flowGrants(t *testing.T, files ...string) []*grantLog {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	logs := make([]*grantLog, len(files))
	for i, f := range files {
		logs[i] = &grantLog{}
		wg.Go(func() {
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				logs[i].add(exchange(f))
			}
		})
	}
	t.Cleanup(func() { close(stop); wg.Wait() })
	return logs
}

// TestAPIServerOutage stops kube-apiserver for 30 s while grants flow, and deletes a
// ServiceKey meanwhile through a second API server on the same etcd (the other member
// of an HA control plane). Invariants: the token server keeps issuing from its cache
// (every grant of the kept key succeeds, outage included, and the count is logged);
// /readyz stays 200 and says the API server does not answer; when it returns, the
// token server catches up with the delete (the deleted key is refused, without a
// restart) and /readyz says "ok" again; the controller works again (restarted as the
// kubelet would if it exited on losing its lease).
func TestAPIServerOutage(t *testing.T) {
	kept := newServiceKey(t, "outage-kept")
	gone := newServiceKey(t, "outage-deleted")
	logs := flowGrants(t, keyFile(t, kept, "outage-kept.json"), keyFile(t, gone, "outage-deleted.json"))
	keptLog, goneLog := logs[0], logs[1]
	readyz := sampleReadyz(t)
	testenv.Eventually(t, "grants flowing", func() (bool, string) {
		return keptLog.count(time.Time{}, time.Now(), issued) >= 5 && goneLog.count(time.Time{}, time.Now(), issued) >= 5, ""
	})
	begin, stopped, back := outageDeleting(t, gone, readyz)
	keptDuring := keptLog.count(stopped, back, issued)
	if keptDuring == 0 {
		t.Errorf("no token issued for the kept key during the %v outage", back.Sub(stopped).Round(time.Second))
	}
	t.Logf("outage %v: %d tokens issued for the kept key and %d for the key deleted meanwhile (its deletion unseen until the API server returned)",
		back.Sub(stopped).Round(time.Second), keptDuring, goneLog.count(stopped, back, issued))

	caughtUp := catchUp(t, goneLog, back)
	t.Logf("deleted key refused %v after the API server returned", caughtUp.Sub(back).Round(time.Millisecond))
	testenv.Eventually(t, "/readyz to say ok again", func() (bool, string) {
		code, body := testenv.HTTPGet(installed.TokenServerReadyURL())
		return code == http.StatusOK && body == "ok", body
	})
	samples := readyz()
	checkReadyz(t, samples, begin)
	okAfterCatchUp(t, samples, back, goneLog)
	controllerWorksAgain(t)

	now := time.Now()
	if refused := keptLog.count(time.Time{}, now, func(s int) bool { return s != http.StatusOK }); refused > 0 {
		t.Errorf("%d grants of the kept key failed (outage included); every one should have been issued", refused)
	}
	if odd := goneLog.count(caughtUp, now, func(s int) bool { return s != http.StatusBadRequest && s != http.StatusUnauthorized }); odd > 0 {
		t.Errorf("%d grants of the deleted key got neither 400 nor 401 after catching up", odd)
	}
	if v := tokenServerMetric(t, "servicekey_token_api_server_last_contact_timestamp_seconds"); v < float64(back.Unix()) {
		t.Errorf("last-contact metric %v not updated after the API server returned (%d)", v, back.Unix())
	}
}

// outageDeleting stops kube-apiserver, deletes sk through a second API server, waits
// until /readyz says the API server does not answer, keeps it stopped for the outage
// and starts it again. It returns when the stop began, when the API server was gone
// and when it was back.
func outageDeleting(t *testing.T, sk *v1.ServiceKey, readyz func() []readyzSample) (begin, stopped, back time.Time) {
	t.Helper()
	second, stopSecond, err := env.SecondAPIServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stopSecond() })
	begin = time.Now()
	if err := env.StopAPIServer(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	stopped = time.Now()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = env.StartAPIServer() // keep the suite's control plane for the tests after this one
		}
	})
	t.Logf("kube-apiserver stopped in %v", stopped.Sub(begin).Round(time.Millisecond))
	if err := second.Delete(context.Background(), sk); err != nil {
		t.Fatalf("delete %s through the second API server: %v", sk.Name, err)
	}
	testenv.Eventually(t, "/readyz to say the API server does not answer", func() (bool, string) {
		_, ok := said(readyz(), stopped, notAnswered)
		return ok, ""
	})
	if v := tokenServerMetric(t, "servicekey_token_api_server_last_contact_timestamp_seconds"); v > float64(stopped.Unix()) {
		t.Errorf("last-contact metric %v is after the API server stopped (%d)", v, stopped.Unix())
	}
	if v := tokenServerMetric(t, "servicekey_token_cache_stale"); v != 1 {
		t.Errorf("servicekey_token_cache_stale = %v during the outage, want 1", v)
	}
	time.Sleep(time.Until(stopped.Add(outage))) // the outage's length is the fault injected, not a wait for an event
	if err := env.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	return begin, stopped, time.Now()
}

// okAfterCatchUp: /readyz says "ok" after the outage only once the cache holds what
// the API server holds, so no grant of the deleted key sent after that answer may be
// issued.
func okAfterCatchUp(t *testing.T, samples []readyzSample, back time.Time, goneLog *grantLog) {
	t.Helper()
	i := slices.IndexFunc(samples, func(s readyzSample) bool { return s.at.After(back) && s.body == "ok" })
	if i < 0 {
		t.Error("/readyz never said ok after the API server returned")
		return
	}
	ok := samples[i]
	goneLog.mu.Lock()
	defer goneLog.mu.Unlock()
	for _, o := range goneLog.outcomes {
		if o.began.After(ok.at) && o.status == http.StatusOK {
			t.Errorf("/readyz said ok at %s, yet a grant of the deleted key sent at %s was issued",
				ok.at.Format(time.RFC3339Nano), o.began.Format(time.RFC3339Nano))
		}
	}
	if v := tokenServerMetric(t, "servicekey_token_cache_stale"); v != 0 {
		t.Errorf("servicekey_token_cache_stale = %v after the catch-up, want 0", v)
	}
}

// readyzSample is one answer of the token server's /readyz.
type readyzSample struct {
	at   time.Time
	code int
	body string
}

// sampleReadyz asks /readyz every poll interval until the test ends; the returned
// function gives the answers so far.
func sampleReadyz(t *testing.T) func() []readyzSample {
	t.Helper()
	var mu sync.Mutex
	var samples []readyzSample
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(testenv.PollInterval)
		defer tick.Stop()
		for {
			code, body := testenv.HTTPGet(installed.TokenServerReadyURL())
			mu.Lock()
			samples = append(samples, readyzSample{time.Now(), code, body})
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	t.Cleanup(func() { close(stop); wg.Wait() })
	return func() []readyzSample {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(samples)
	}
}

// said returns the first sample at or after from whose body contains text.
func said(samples []readyzSample, from time.Time, text string) (readyzSample, bool) {
	for _, s := range samples {
		if !s.at.Before(from) && strings.Contains(s.body, text) {
			return s, true
		}
	}
	return readyzSample{}, false
}

// checkReadyz asserts /readyz answered 200 throughout and logs what it said when.
func checkReadyz(t *testing.T, samples []readyzSample, start time.Time) {
	t.Helper()
	last := ""
	for _, s := range samples {
		if s.code != http.StatusOK {
			t.Errorf("/readyz at %s: %d %s", s.at.Format(time.RFC3339Nano), s.code, s.body)
		}
		kind, _, _ := strings.Cut(s.body, " (")
		if kind != last {
			t.Logf("/readyz from +%v: %s", s.at.Sub(start).Round(100*time.Millisecond), s.body)
			last = kind
		}
	}
}

// catchUp polls until a grant of the deleted key sent after back was refused (400 or
// 401), and returns when that answer came.
func catchUp(t *testing.T, goneLog *grantLog, back time.Time) time.Time {
	t.Helper()
	var at time.Time
	err := testenv.Poll("the token server to refuse the key deleted during the outage", 2*time.Minute, func() (bool, string) {
		goneLog.mu.Lock()
		defer goneLog.mu.Unlock()
		for _, o := range goneLog.outcomes {
			if o.began.After(back) && (o.status == http.StatusBadRequest || o.status == http.StatusUnauthorized) {
				at = o.at
				return true, ""
			}
		}
		return false, "still issued"
	})
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// controllerWorksAgain restarts the controller if it exited during the outage (with
// leader election it exits when it cannot renew its lease; a pod would be restarted by
// the kubelet) and checks it issues a new ServiceKey.
func controllerWorksAgain(t *testing.T) {
	t.Helper()
	if exited, how := installed.Exited(&installed.Controller); exited {
		t.Logf("the controller exited during the outage (%s): restarting it as the kubelet would", how)
		if err := installed.Restart(context.Background(), &installed.Controller, syscall.SIGTERM, installed.ControllerReadyURL()); err != nil {
			t.Fatal(err)
		}
	}
	newServiceKey(t, "outage-after")
}

// tokenServerMetric reads one unlabelled gauge from the token server's /metrics.
func tokenServerMetric(t *testing.T, name string) float64 {
	t.Helper()
	v, err := testenv.MetricValue(installed.TokenServerMetricsURL(), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
