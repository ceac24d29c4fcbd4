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
	"errors"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// TestDrain: after SIGTERM a replica keeps serving through the shutdown delay, but
// says it is not ready (so the Service drops it) and closes every connection after
// its response (so clients reconnect elsewhere); then it stops accepting.
func TestDrain(t *testing.T) {
	r := startReplica(t, "", 0, 0)
	client := &http.Client{Transport: &http.Transport{}}
	// get answers the status, whether the server closes the connection, and the body.
	get := func(path string) (int, bool, string, error) {
		resp, err := client.Get(r.url + path) //nolint:noctx // test
		if err != nil {
			return 0, false, "", err
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Close, string(body), nil
	}
	status, closed, _, err := get("/.well-known/oauth-authorization-server")
	if err != nil || status != http.StatusOK || closed {
		t.Fatalf("before the drain: %d %v (close %v), want 200 on a kept-alive connection", status, err, closed)
	}

	delay, endDelay := context.WithCancel(context.Background())
	drained := make(chan struct{})
	go func() {
		r.running.Drain(delay, time.Hour)
		close(drained)
	}()
	testenv.Eventually(t, "/readyz says shutting down", func() (bool, string) {
		status, _, body, err := get("/readyz")
		if err != nil {
			return false, err.Error()
		}
		return status == http.StatusServiceUnavailable && body == "not ready: shutting down\n", body
	})
	status, closed, _, err = get("/.well-known/oauth-authorization-server")
	if err != nil || status != http.StatusOK || !closed {
		t.Fatalf("during the drain: %d %v (close %v), want 200 with Connection: close", status, err, closed)
	}
	select {
	case <-drained:
		t.Fatal("Drain returned before its delay ended")
	default:
	}

	endDelay()
	<-drained
	r.stop()
	r.running.Wait()
	if _, _, _, err := get("/healthz"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("after the drain: %v, want connection refused", err)
	}
}
