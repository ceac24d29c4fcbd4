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

package testenv

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// LogBuffer collects log output from concurrent writers, for tests that check what a
// component logged (never a key, a secret or a token).
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// PollInterval is how often Poll asks; a poll interval, not synchronisation.
const PollInterval = 20 * time.Millisecond

// Poll asks cond every PollInterval until it holds, and returns an error naming what
// and what cond last reported when timeout passes first. Tests, the demo and the
// e2e stack all wait this way: never a fixed sleep.
func Poll(what string, timeout time.Duration, cond func() (bool, string)) error {
	return PollEvery(what, timeout, PollInterval, cond)
}

// PollEvery is Poll asking every interval: for a cond that costs more than a cache
// read (a pod's log fetched through the kubelet).
func PollEvery(what string, timeout, interval time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, seen := cond()
		if ok {
			return nil
		}
		last = seen
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s; last seen: %s", timeout, what, last)
		}
		time.Sleep(interval)
	}
}

// Eventually is Poll with a 30s timeout that fails the test.
func Eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	if err := Poll(what, 30*time.Second, cond); err != nil {
		t.Fatal(err)
	}
}

// RunSuite is the body of an integration suite's TestMain: it starts the control
// plane, sends controller-runtime's log to logs at verbosity V(maxV) (the binaries'
// cap, so leak checks see what production could log), runs setup and the tests, and
// stops everything. It returns the exit code.
func RunSuite(m *testing.M, logs io.Writer, maxV int8, setup func(context.Context, *Env) error) int {
	env, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	ctrl.SetLogger(zap.New(zap.WriteTo(logs), zap.UseDevMode(true), zap.Level(zapcore.Level(-maxV))))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := setup(ctx, env); err != nil {
		fmt.Fprintln(os.Stderr, "suite setup:", err)
		return 1
	}
	return m.Run()
}

// FuzzingOnly reports whether this test binary runs nothing but a fuzz target: a fuzz
// worker process, or `go test -fuzz X -run '^$'`. Call it after flag.Parse. Suites
// skip the control plane then: the fuzz targets are pure, and every worker would
// otherwise start its own. With other tests selected, the suite runs as usual.
func FuzzingOnly() bool {
	if worker := flag.Lookup("test.fuzzworker"); worker != nil && worker.Value.String() == "true" {
		return true
	}
	fuzz, run := flag.Lookup("test.fuzz"), flag.Lookup("test.run")
	return fuzz != nil && fuzz.Value.String() != "" && run != nil && run.Value.String() == "^$"
}

// httpClient bounds every request: a server that accepts and stalls must not hold a
// Poll past its deadline.
var httpClient = &http.Client{Timeout: 10 * time.Second}

// HTTPGet returns the status and body of a GET of url; on a transport error the
// status is 0 and the body the error, so callers in goroutines need not fail the test.
func HTTPGet(url string) (int, string) {
	resp, err := httpClient.Get(url) //nolint:noctx // tests' own loopback endpoints
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// FreePorts reserves n loopback addresses the OS says are free.
func FreePorts(n int) ([]string, error) {
	var addrs []string
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for range n {
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// MetricValue reads one series (its name and labels exactly as exposed, e.g.
// `servicekey_key_pool_keys{bits="2048"}`) from a Prometheus text endpoint.
func MetricValue(url, series string) (float64, error) {
	code, body := HTTPGet(url)
	if code != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %d %s", url, code, body)
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), series+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s not exposed at %s", series, url)
}
