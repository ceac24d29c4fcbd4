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
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	skclient "github.com/servicekey-operator/servicekey-operator/client"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// newServiceKey creates a ServiceKey in the default namespace (the chart's default
// policy permits it) and waits until it is Ready.
func newServiceKey(t *testing.T, name string) *v1.ServiceKey {
	t.Helper()
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	if err := env.Client.Create(context.Background(), sk); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), sk) })
	return waitFor(t, sk, "Ready", func(sk *v1.ServiceKey) bool { return ready(sk, v1.ReasonIssued) })
}

// mergePatch applies a JSON merge patch as `kubectl patch --type merge -p` does.
func mergePatch(t *testing.T, sk *v1.ServiceKey, patch string) {
	t.Helper()
	if err := env.Client.Patch(context.Background(), sk.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
}

func activeID(sk *v1.ServiceKey) string {
	for _, k := range sk.Status.Keys {
		if k.State == v1.KeyActive {
			return k.KeyID
		}
	}
	return ""
}

// TestLeakedKeyRunbook runs docs/operations.md's "a leaked key, now, no grace", one
// command at a time: rotate, then lower gracePeriod. The leaked key must be refused
// at once, not after the 24 h grace it was given at rotation.
func TestLeakedKeyRunbook(t *testing.T) {
	sk := newServiceKey(t, "leaky")
	leakedID := activeID(sk)
	leaked := keyFile(t, sk, "leaked.json")
	cliToken(t, leaked)

	// kubectl annotate sk leaky auth.servicekey.dev/rotate=$(date +%s) --overwrite
	mergePatch(t, sk, fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, v1.AnnotationRotate, strconv.FormatInt(time.Now().Unix(), 10)))
	sk = waitFor(t, sk, "rotated", func(sk *v1.ServiceKey) bool { return ready(sk, v1.ReasonIssued) && activeID(sk) != leakedID })
	cliToken(t, leaked) // still accepted: Retiring for the default 24h grace

	// kubectl patch sk leaky --type merge -p '{"spec":{"rotation":{"gracePeriod":"1s"}}}'
	mergePatch(t, sk, `{"spec":{"rotation":{"gracePeriod":"1s"}}}`)
	waitRefused(t, leaked)
	sk = waitFor(t, sk, "the leaked key gone from status", func(sk *v1.ServiceKey) bool {
		for _, k := range sk.Status.Keys {
			if k.KeyID == leakedID {
				return false
			}
		}
		return true
	})
	cliToken(t, keyFile(t, sk, "fresh.json"))
}

// grantOutcome is what one grant got: a token, an HTTP status, or no answer.
type grantOutcome struct {
	began, at time.Time // sent, answered
	status    int       // 200 for a token, 0 when there was no HTTP answer
}

// exchange exchanges a fresh assertion signed with the key file's key for a token, as a
// pod using the client kit does.
func exchange(keyFile string) grantOutcome {
	began := time.Now()
	ts, err := skclient.NewTokenSource(skclient.Options{KeyFile: keyFile, AllowInsecureHTTP: true})
	if err != nil {
		return grantOutcome{began: began, at: time.Now()}
	}
	_, err = oauth2.ReuseTokenSource(nil, ts).Token()
	var re *oauth2.RetrieveError
	switch {
	case err == nil:
		return grantOutcome{began: began, at: time.Now(), status: 200}
	case errors.As(err, &re) && re.Response != nil:
		return grantOutcome{began: began, at: time.Now(), status: re.Response.StatusCode}
	default:
		return grantOutcome{began: began, at: time.Now()}
	}
}

// assertion signs one jwt-bearer grant with the key file's key, with a fixed jti.
func assertion(t *testing.T, keyFile string) string {
	t.Helper()
	kf, err := skclient.LoadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := keyutil.ParsePrivateKey([]byte(kf.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": kf.ClientID, "sub": kf.UserID, "aud": kf.TokenURI,
		"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "jti": fmt.Sprint("replay-", now.UnixNano())})
	tok.Header["kid"] = kf.KeyID
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// post sends the assertion to the token endpoint and returns the HTTP status.
func post(t *testing.T, assertion string) int {
	t.Helper()
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}}
	resp, err := http.PostForm(installed.Issuer+"/oauth2/token", form)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestControllerKilledDuringRotations kills the controller process (SIGKILL) at a
// random point of each of 50 rotations and starts it again. Invariant: every key
// that ever appeared in the Secret was published in status before (checked from
// watches, by etcd revision), the current key is accepted by the token server after
// each restart, and 50 rotations put at most 50 new keys into the Secret.
func TestControllerKilledDuringRotations(t *testing.T) {
	const rotations = 50
	ctx := context.Background()
	sk := newServiceKey(t, "crashy")
	h := testenv.WatchKeysFor(t, env.Config, env.Scheme, sk.Namespace, sk.Name)
	seed := time.Now().UnixNano()
	t.Logf("kill points from seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	withoutLeaderElection(t)
	handled := func(i int) func(*v1.ServiceKey) bool {
		return func(sk *v1.ServiceKey) bool {
			s := &corev1.Secret{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(sk), s); err != nil {
				return false
			}
			return ready(sk, v1.ReasonIssued) && s.Annotations["auth.servicekey.dev/rotation-handled"] == strconv.Itoa(i) &&
				activeID(sk) == testenv.KeyIDOf(s.Data[v1.SecretKeyPrivateKey]) && len(sk.Status.Keys) > 0 && sk.Status.Keys[0].State == v1.KeyActive
		}
	}
	for i := 1; i <= rotations; i++ {
		mergePatch(t, sk, fmt.Sprintf(`{"metadata":{"annotations":{%q:"%d"}}}`, v1.AnnotationRotate, i))
		<-time.After(time.Duration(rng.Int64N(int64(600 * time.Millisecond)))) // the fault's point, not a wait for a state
		if err := installed.Restart(ctx, &installed.Controller, syscall.SIGKILL, installed.ControllerReadyURL()); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		sk = waitFor(t, sk, fmt.Sprintf("rotation %d handled after the restart", i), handled(i))
	}
	if out := exchange(keyFile(t, sk, "crashy.json")); out.status != 200 {
		t.Errorf("the current key after 50 crashes: HTTP %d", out.status)
	}
	testenv.Eventually(t, "the watch saw the last key", func() (bool, string) {
		got := h.HandedOut()
		return len(got) > 0 && got[len(got)-1] == activeID(sk), fmt.Sprint(len(got), " keys")
	})
	if err := h.Check(); err != nil {
		t.Error(err)
	}
	if n := len(h.HandedOut()); n != rotations+1 {
		t.Errorf("%d keys reached the Secret for one issue and %d rotations, want one each", n, rotations)
	}
	t.Logf("%d rotations with the controller killed in each: %d keys reached the Secret, %d were published",
		rotations, len(h.HandedOut()), len(h.Published()))
}

// withoutLeaderElection restarts the controller without leader election until the
// test ends: a killed leader's lease would make each new process wait 15 s before
// acting. The write order is what the kill tests test, and it does not depend on who
// holds the lease.
func withoutLeaderElection(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if err := installed.Restart(ctx, &installed.Controller, syscall.SIGTERM, installed.ControllerReadyURL(), "--leader-elect=false"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := installed.Restart(ctx, &installed.Controller, syscall.SIGTERM, installed.ControllerReadyURL(), "--leader-elect=true"); err != nil {
			t.Error(err)
		}
	})
}

// TestControllerKilledBetweenPublishAndSecret hits the one window that random kill
// points rarely do: the new key is published as Pending, the Secret write is refused
// (an admission policy), and the controller is killed, losing the private half. The
// restarted controller must retire that key (nobody holds it) and hand out exactly
// one new key once the Secret can be written.
func TestControllerKilledBetweenPublishAndSecret(t *testing.T) {
	ctx := context.Background()
	withoutLeaderElection(t)
	sk := newServiceKey(t, "crash-window")
	first := activeID(sk)
	h := testenv.WatchKeysFor(t, env.Config, env.Scheme, sk.Namespace, sk.Name)
	lift, err := testenv.RefuseKeySecrets(ctx, env.Client, "refuse-crash-window", sk.Namespace, sk.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lift() }()
	mergePatch(t, sk, fmt.Sprintf(`{"metadata":{"annotations":{%q:"window"}}}`, v1.AnnotationRotate))
	lost := ""
	sk = waitFor(t, sk, "a Pending key published, its Secret write refused", func(sk *v1.ServiceKey) bool {
		for _, k := range sk.Status.Keys {
			if k.State == v1.KeyPending {
				lost = k.KeyID
			}
		}
		return lost != ""
	})
	if err := installed.Restart(ctx, &installed.Controller, syscall.SIGKILL, installed.ControllerReadyURL()); err != nil {
		t.Fatal(err)
	}
	if err := lift(); err != nil {
		t.Fatal(err)
	}
	sk = waitFor(t, sk, "the rotation done by the restarted controller", func(sk *v1.ServiceKey) bool {
		return ready(sk, v1.ReasonIssued) && activeID(sk) != first && activeID(sk) != lost && sk.Status.Keys[0].State == v1.KeyActive
	})
	for _, k := range sk.Status.Keys {
		if k.KeyID == lost && (k.State != v1.KeyRetiring || k.Superseded == nil || !k.Superseded.Equal(&k.Created)) {
			t.Errorf("the lost Pending key is %s (superseded %v), want Retiring and marked never Active", k.State, k.Superseded)
		}
	}
	testenv.Eventually(t, "the watch saw the new key", func() (bool, string) {
		got := h.HandedOut()
		return len(got) > 0 && got[len(got)-1] == activeID(sk), fmt.Sprint(got)
	})
	if err := h.Check(); err != nil {
		t.Error(err)
	}
	if got := h.HandedOut(); len(got) != 2 || got[0] != first {
		t.Errorf("keys handed out %v, want [%s, the new Active key]: the lost key must never reach the Secret", got, first)
	}
}

// TestTokenServerRestartUnderLoad restarts the token server (SIGTERM, as a rollout
// does) while grants flow. No 5xx may come outside the restart window (from the
// signal until the new process is ready); inside it, clients see connection errors
// or 503 with Retry-After. An assertion used before the restart is accepted again
// after it: the replay cache is in memory (docs/security.md says so).
func TestTokenServerRestartUnderLoad(t *testing.T) {
	ctx := context.Background()
	sk := newServiceKey(t, "restarts")
	kf := keyFile(t, sk, "restarts.json")
	var mu sync.Mutex
	var outcomes []grantOutcome
	stop := make(chan struct{})
	var wg sync.WaitGroup
	pace := time.NewTicker(200 * time.Millisecond) // 5 grants/s: below the chart's rate limit of 10/s
	defer pace.Stop()
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-pace.C:
				}
				out := exchange(kf)
				mu.Lock()
				outcomes = append(outcomes, out)
				mu.Unlock()
			}
		})
	}
	countOK := func(after time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, o := range outcomes {
			if o.status == 200 && o.at.After(after) {
				n++
			}
		}
		return n
	}
	testenv.Eventually(t, "grants flowing", func() (bool, string) { return countOK(time.Time{}) >= 10, "" })
	replayed := assertion(t, kf)
	if got := post(t, replayed); got != http.StatusOK {
		t.Fatalf("fresh assertion: HTTP %d", got)
	}
	if got := post(t, replayed); got != http.StatusBadRequest {
		t.Errorf("replayed assertion before the restart: HTTP %d, want 400", got)
	}
	begin := time.Now()
	if err := installed.Restart(ctx, &installed.TokenServer, syscall.SIGTERM, installed.TokenServerReadyURL()); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	testenv.Eventually(t, "grants flowing after the restart", func() (bool, string) { return countOK(end) >= 10, "" })
	close(stop)
	wg.Wait()
	inWindow := map[int]int{}
	for _, o := range outcomes {
		switch {
		case o.at.After(begin) && o.at.Before(end):
			inWindow[o.status]++
		case o.status >= 500 || o.status == 0:
			t.Errorf("HTTP %d at %s, outside the restart window %s..%s", o.status, o.at.Format(time.RFC3339Nano),
				begin.Format(time.RFC3339Nano), end.Format(time.RFC3339Nano))
		case o.status != 200:
			t.Errorf("HTTP %d at %s: a valid grant refused", o.status, o.at.Format(time.RFC3339Nano))
		}
	}
	t.Logf("%d grants; restart window %v with outcomes %v (0: no HTTP answer)", len(outcomes), end.Sub(begin), inWindow)
	// What docs/security.md says: the replay cache lives in the process, so a restart
	// forgets it and an unexpired assertion can be used once more.
	if got := post(t, replayed); got != http.StatusOK {
		t.Errorf("assertion replayed across the restart: HTTP %d; docs/security.md says it is accepted once more", got)
	}
}
