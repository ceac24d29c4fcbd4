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

package tokenserver_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

// replica is one token server started by a test, beside the suite's.
type replica struct {
	url, metrics string
	running      *tokenserver.Running
	stop         context.CancelFunc
}

// startReplica starts a token server against the suite's API server with the given
// shared state ("" for memory) and rate limit, and waits until it is ready. Every
// replica knows itself by the suite's token URL, as replicas behind one Service do.
func startReplica(t *testing.T, sharedState string, rate float64, burst int) replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	running, err := tokenserver.Start(ctx, serverConfig, testScheme, tokenserver.Options{
		Issuer: "https://token.test", Listen: "127.0.0.1:0", TokenURL: tokenURL,
		SigningSecret: types.NamespacedName{Namespace: systemNS, Name: signingKey},
		MaxTTL:        time.Hour, DefaultAudience: []string{"https://api.test"}, ReplayCacheSize: 1000, ReplayPerClient: 1000,
		RateLimit: rate, RateBurst: burst, SharedState: sharedState, LastUsedGranularity: time.Hour, MetricsListen: "127.0.0.1:0",
		Clock: clock.RealClock{}, Log: ctrl.Log.WithName("replica"),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := replica{url: "http://" + running.Addr.String(), metrics: "http://" + running.MetricsAddr.String() + "/metrics", running: running, stop: cancel}
	testenv.Eventually(t, "replica ready", func() (bool, string) {
		code, body := testenv.HTTPGet(r.url + "/readyz")
		return code == 200, body
	})
	return r
}

// replicaPair starts a Redis and two replicas sharing it.
func replicaPair(t *testing.T, rate float64, burst int) (replica, replica, *testenv.Redis) {
	t.Helper()
	r := testenv.StartRedis(t)
	return startReplica(t, r.URL(), rate, burst), startReplica(t, r.URL(), rate, burst), r
}

// post sends a token request to a replica.
func (r replica) post(t *testing.T, form url.Values) response {
	t.Helper()
	return doAt(t, r.url+"/oauth2/token", http.MethodPost, "application/x-www-form-urlencoded", form.Encode())
}

func bearerForm(assertion string) url.Values {
	return url.Values{"grant_type": {tokenserver.GrantTypeJWTBearer}, "assertion": {assertion}}
}

// TestReplicasShareReplayProtection: an assertion accepted by one replica is refused
// by the other.
func TestReplicasShareReplayProtection(t *testing.T) {
	a, b, _ := replicaPair(t, 0, 0)
	kf := readyKey(t, "shared-replay", v1.ServiceKeySpec{})
	assertion := signAssertion(t, kf, nil)
	if got := a.post(t, bearerForm(assertion)); got.status != 200 {
		t.Fatalf("first use on replica A: %d %s", got.status, got.body)
	}
	got := b.post(t, bearerForm(assertion))
	if got.status != 400 || !strings.Contains(got.body, "already used") {
		t.Fatalf("replay on replica B: %d %s; want 400 invalid_grant, already used", got.status, got.body)
	}
}

// TestReplicasShareTheRateLimit: a client sending twice its budget across two
// replicas gets its one budget, and 429 with Retry-After for the rest.
func TestReplicasShareTheRateLimit(t *testing.T) {
	const burst, rate = 5, 0.05 // one more token every 20 s
	a, b, _ := replicaPair(t, rate, burst)
	kf := readyKey(t, "shared-rate", v1.ServiceKeySpec{})
	start := time.Now()
	issued, limited := 0, 0
	for i := range 2 * burst {
		got := []replica{a, b}[i%2].post(t, bearerForm(signAssertion(t, kf, nil)))
		switch {
		case got.status == 200:
			issued++
		case got.status == http.StatusTooManyRequests && got.header.Get("Retry-After") != "":
			limited++
		default:
			t.Fatalf("request %d: %d %s", i, got.status, got.body)
		}
	}
	budget := burst + int(rate*time.Since(start).Seconds())
	if issued < burst || issued > budget || issued+limited != 2*burst {
		t.Errorf("%d issued and %d limited of %d requests across two replicas; want the one budget of %d issued", issued, limited, 2*burst, budget)
	}
}

// outcome is one request of the load in TestSharedStateOutage.
type outcome struct {
	start, end time.Time
	status     int
	retryAfter string
}

// TestSharedStateOutage stops Redis under load on two replicas: while it is down every
// grant is refused with 503 and Retry-After (none issued), /readyz and the metric say
// why, and service resumes by itself when Redis is back, still refusing an assertion
// used before the outage.
func TestSharedStateOutage(t *testing.T) {
	a, b, r := replicaPair(t, 0, 0)
	kf := readyKey(t, "shared-outage", v1.ServiceKeySpec{})
	used := signAssertion(t, kf, nil)
	if got := a.post(t, bearerForm(used)); got.status != 200 {
		t.Fatalf("before the outage: %d %s", got.status, got.body)
	}
	var mu sync.Mutex
	var outcomes []outcome
	last := func(status int) bool {
		mu.Lock()
		defer mu.Unlock()
		return len(outcomes) > 0 && outcomes[len(outcomes)-1].status == status
	}
	sign := assertionSigner(t, kf)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			o := outcome{start: time.Now()}
			resp, err := http.PostForm([]replica{a, b}[i%2].url+"/oauth2/token", bearerForm(sign()))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				o.status, o.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
			}
			o.end = time.Now()
			mu.Lock()
			outcomes = append(outcomes, o)
			mu.Unlock()
		}
	}()
	defer func() { stop(); <-done }()
	testenv.Eventually(t, "tokens issued under load", func() (bool, string) { return last(200), "not yet" })
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	testenv.Eventually(t, "20 requests answered while Redis is down", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, o := range outcomes {
			if o.start.After(stopped) {
				n++
			}
		}
		return n >= 20, "fewer"
	})
	testenv.Eventually(t, "readyz and the metric report the outage", func() (bool, string) {
		code, body := testenv.HTTPGet(a.url + "/readyz")
		up, err := testenv.MetricValue(a.metrics, "servicekey_shared_state_up")
		return code == 200 && strings.Contains(body, "degraded") && strings.Contains(body, "Redis") && err == nil && up == 0, body
	})
	restarting := time.Now()
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "tokens issued again", func() (bool, string) { return last(200), "not yet" })
	stop()
	<-done
	checkOutage(t, outcomes, stopped, restarting)
	if got := b.post(t, bearerForm(used)); got.status != 400 || !strings.Contains(got.body, "already used") {
		t.Errorf("an assertion used before the outage: %d %s; want it refused", got.status, got.body)
	}
	testenv.Eventually(t, "readyz without the outage", func() (bool, string) {
		code, body := testenv.HTTPGet(b.url + "/readyz")
		return code == 200 && body == "ok", body
	})
}

// assertionSigner signs fresh grants of kf without the testing.T, for a load goroutine
// (a failure shows as a refused grant).
func assertionSigner(t *testing.T, kf keyutil.KeyFile) func() string {
	key, err := gojwt.ParseRSAPrivateKeyFromPEM([]byte(kf.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return func() string {
		signed, _ := signWith(key, kf, nil)
		return signed
	}
}

// checkOutage asserts that no request made entirely while Redis was down was issued a
// token, and that each was answered 503 with Retry-After.
func checkOutage(t *testing.T, outcomes []outcome, stopped, restarting time.Time) {
	t.Helper()
	during := 0
	for _, o := range outcomes {
		if o.start.Before(stopped) || o.end.After(restarting) {
			continue
		}
		during++
		if o.status != http.StatusServiceUnavailable || o.retryAfter == "" {
			t.Fatalf("a request made while Redis was down got %d (Retry-After %q); want 503 with Retry-After", o.status, o.retryAfter)
		}
	}
	if during == 0 {
		t.Fatal("no request was made while Redis was down")
	}
	t.Logf("%d requests while Redis was down, all 503; %d in all", during, len(outcomes))
}

// tokenReply is a token response's body, refresh token included.
type tokenReply struct {
	AccessToken  string `json:"access_token"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token"`
}

func reply(t *testing.T, got response) tokenReply {
	t.Helper()
	if got.status != 200 {
		t.Fatalf("%d %s", got.status, got.body)
	}
	var r tokenReply
	if err := json.Unmarshal([]byte(got.body), &r); err != nil {
		t.Fatal(err)
	}
	issued.add(r.RefreshToken)
	return r
}

func refreshForm(token, scope string) url.Values {
	f := url.Values{"grant_type": {tokenserver.GrantTypeRefreshToken}, "refresh_token": {token}}
	if scope != "" {
		f.Set("scope", scope)
	}
	return f
}
