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

package main

import (
	"context"
	"crypto/rsa"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

// cred is what a client holds of a ServiceKey: its key file's fields.
type cred struct {
	name, clientID, keyID, aud string
	key                        *rsa.PrivateKey
	next                       atomic.Int64 // jti counter
}

// creds reads the key Secrets of the named ServiceKeys, as a pod mounting them would.
func (b *bench) creds(names []string) ([]*cred, error) {
	out := make([]*cred, len(names))
	for i, name := range names {
		var s corev1.Secret
		if err := b.env.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &s); err != nil {
			return nil, fmt.Errorf("get Secret %s: %w", name, err)
		}
		key, _, err := keyutil.ParsePrivateKey(s.Data[v1.SecretKeyPrivateKey])
		if err != nil {
			return nil, fmt.Errorf("private key in Secret %s: %w", name, err)
		}
		out[i] = &cred{name: name, clientID: string(s.Data[v1.SecretKeyClientID]), keyID: string(s.Data[v1.SecretKeyKeyID]),
			aud: string(s.Data[v1.SecretKeyTokenURI]), key: key}
	}
	return out, nil
}

// grant is a form body with a fresh RS256 assertion (RFC 7523 §2.1) for c.
func (c *cred) grant() string {
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": c.clientID, "aud": c.aud,
		"iat": now.Unix(), "exp": now.Add(30 * time.Minute).Unix(), "jti": fmt.Sprintf("bench-%s-%d", c.name, c.next.Add(1))})
	t.Header["kid"] = c.keyID
	s, _ := t.SignedString(c.key)
	return url.Values{"grant_type": {tokenserver.GrantTypeJWTBearer}, "assertion": {s}}.Encode()
}

// presign signs n grants, round robin over creds, on all cores (before any timing).
func presign(creds []*cred, n int) []string {
	out := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				out[i] = creds[int(i)%len(creds)].grant()
			}
		}()
	}
	wg.Wait()
	return out
}

// post sends one grant and returns the status code and the round trip's time.
func post(hc *http.Client, endpoint, body string) (int, time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, time.Since(start), nil
}

func httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
}

// peak sends bodies from 8 clients as fast as answers come back and returns tokens/s.
func peak(endpoint string, bodies []string) (float64, error) {
	var next atomic.Int64
	var failed atomic.Int64
	hc := httpClient()
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(len(bodies)); i = next.Add(1) - 1 {
				if code, _, err := post(hc, endpoint, bodies[i]); err != nil || code != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {

		return 0, fmt.Errorf("%d of %d grants at peak failed", f, len(bodies))
	}
	return float64(len(bodies)) / time.Since(start).Seconds(), nil
}

// load sends bodies at rate, paced open loop (requests leave on schedule whether or
// not earlier ones were answered), until stop is closed or the bodies run out.
type load struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	lat          []time.Duration
	ranOut       atomic.Bool
}

func (l *load) run(endpoint string, bodies []string, rate float64, stop <-chan struct{}) {
	interval := time.Duration(float64(time.Second) / rate)
	hc := httpClient()
	var wg sync.WaitGroup
	start := time.Now()
	defer wg.Wait()
	for i := range bodies {
		select {
		case <-stop:
			return
		case <-time.After(time.Until(start.Add(time.Duration(i) * interval))): // pacing the load
		}
		wg.Add(1)
		l.sent.Add(1)
		go func() {
			defer wg.Done()
			code, d, err := post(hc, endpoint, bodies[i])
			if err != nil || code != http.StatusOK {
				l.failed.Add(1)
				return
			}
			l.mu.Lock()
			l.lat = append(l.lat, d)
			l.mu.Unlock()
		}()
	}
	l.ranOut.Store(true)
}

// revocation measures delete → first refused grant for b.flags.revocations
// ServiceKeys, one at a time, while grants of the other ServiceKeys flow at half the
// token server's peak rate measured just before.
func (b *bench) revocation() error {
	n, r := b.flags.n, b.flags.revocations
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("key-%04d", i)
	}
	victims, err := b.creds(names[:r])
	if err != nil {
		return err
	}
	others, err := b.creds(names[r:])
	if err != nil {
		return err
	}
	if len(others) == 0 {
		others = victims // N = revocations: the load uses the keys until each is deleted
	}
	// At most 4000 per client: each client's replay-cache share is 5000.
	peakRate, err := peak(b.tokenURL, presign(others, min(8000, 4000*len(others))))
	if err != nil {
		return err
	}
	rate := peakRate / 2
	// Enough for the deletions at about 30 ms each (a 20 ms pause and the latency)
	// plus margin; the report says when the load ran out before the last deletion.
	bodies := presign(others, int(rate*(0.03*float64(r)+2)))
	probes := make([][]string, r)
	for i, v := range victims {
		probes[i] = presign([]*cred{v}, 10)
	}
	l := &load{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { l.run(b.tokenURL, bodies, rate, stop); close(done) }()
	lat, late, err := b.revokeAll(victims, probes)
	close(stop)
	<-done
	if err != nil {
		return err
	}
	fmt.Printf("\n## Revocation: ServiceKey deleted → first refused grant (%d deletions, one at a time)\n\n", r)
	fmt.Printf("peak %.0f grants/s (8 clients, %d keys); load at half of it: %.0f/s, %d sent, %d not 200",
		peakRate, len(others), rate, l.sent.Load(), l.failed.Load())
	if l.ranOut.Load() {
		fmt.Printf(" (the presigned load ran out before the last deletion)")
	}
	fmt.Printf("; load latency p50 %v, p99 %v\n\n", pct(l.lat, 50), pct(l.lat, 99))
	fmt.Printf("| deletions | p50 | p90 | p99 | max | grants issued after the delete call returned |\n|---|---|---|---|---|---|\n")
	fmt.Printf("| %d | %v | %v | %v | %v | %d |\n", r, pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 100), late)
	return nil
}

// revokeAll deletes each victim and sends its grants back to back until one is
// refused; it returns the times from the delete call to that refusal, and how many
// grants were still issued after the delete call had returned.
func (b *bench) revokeAll(victims []*cred, probes [][]string) ([]time.Duration, int, error) {
	hc := httpClient()
	var lat []time.Duration
	late := 0
	for i, v := range victims {
		time.Sleep(20 * time.Millisecond) // spacing the deletions over the load, not synchronisation
		sk := &v1.ServiceKey{}
		sk.Name, sk.Namespace = v.name, namespace
		start := time.Now()
		if err := b.env.Client.Delete(context.Background(), sk); err != nil {
			return nil, 0, fmt.Errorf("delete ServiceKey %s: %w", v.name, err)
		}
		deadline := start.Add(time.Minute)
		for j := 0; ; j++ {
			body := v.grant()
			if j < len(probes[i]) {
				body = probes[i][j]
			}
			code, _, err := post(hc, b.tokenURL, body)
			if err != nil {
				return nil, 0, err
			}
			now := time.Now()
			if code == http.StatusBadRequest || code == http.StatusUnauthorized {
				lat = append(lat, now.Sub(start)) // invalid_grant or invalid_client: revoked
				break
			}
			if code == http.StatusOK {
				late++ // every probe is sent after the delete call returned
			}
			if now.After(deadline) {
				return nil, 0, fmt.Errorf("grants of deleted ServiceKey %s still issued after a minute", v.name)
			}
		}
	}
	return lat, late, nil
}
