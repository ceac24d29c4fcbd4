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
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// TestPythonClient runs examples/python: its unit tests, then the script against the
// token server and the example resource server. It caches the token (a second run
// sends no grant), says why a grant is refused, and, once the resource server answers
// "Access token expired" (the ServiceKey's tokens live a minute), gets a new token and
// retries once. It runs in parallel with TestDocs, waiting out the token's minute.
func TestPythonClient(t *testing.T) {
	t.Parallel()
	py := python(t)
	dir := filepath.Join(testenv.RepoRoot(), "examples", "python")
	unit := exec.Command(py, "-m", "unittest", "discover", "-s", dir)
	unit.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if out, err := unit.CombinedOutput(); err != nil {
		t.Fatalf("python unit tests: %v\n%s", err, out)
	}

	api := startResourceServer(t)
	sk, keyFile := pythonKey(t, api)
	waitUsable(t, sk, keyFile)
	script := filepath.Join(dir, "servicekey_client.py")
	cache := filepath.Join(t.TempDir(), "token.json")
	runPy := func(scope string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(py, script, "--key-file", keyFile, "--scope", scope, "--cache", cache, api+"/hello")
		cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	want := "200 hello py-client/caller (system:servicekey:py-client:caller)"
	if out, stderr, err := runPy("read"); err != nil || strings.TrimSpace(out) != want {
		t.Fatalf("first call: %v: %q, stderr %q; want %q", err, out, stderr, want)
	}
	first := cachedToken(t, cache)
	if out, _, err := runPy("read"); err != nil || strings.TrimSpace(out) != want || cachedToken(t, cache) != first {
		t.Fatalf("second call did not reuse the cached token: %v, %q", err, out)
	}
	if _, stderr, err := runPy("write"); err == nil || !strings.Contains(stderr, "invalid_scope") || strings.Contains(stderr, "Client Error") {
		t.Errorf("a refused grant: %v, stderr %q; want the RFC 6749 error, not requests' status text", err, stderr)
	}

	if err := testenv.PollEvery("the resource server calls the cached token expired", 3*time.Minute, 2*time.Second, func() (bool, string) {
		status, challenge := bearerGet(api+"/hello", first)
		return status == http.StatusUnauthorized && strings.Contains(challenge, "Access token expired"), challenge
	}); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runPy("read")
	if err != nil || strings.TrimSpace(out) != want || !strings.Contains(stderr, "access token expired; getting a new one and retrying once") {
		t.Fatalf("after expiry: %v: %q, stderr %q; want one retry and %q", err, out, stderr, want)
	}
	second := cachedToken(t, cache)
	if second == first {
		t.Error("the cache still holds the expired token")
	}
	for _, tok := range []string{first, second} {
		if strings.Contains(out+stderr, tok) {
			t.Error("the script printed an access token")
		}
	}
}

// python finds a python3 with Debian's python3-jwt and python3-requests.
func python(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(py, "-c", "import jwt, requests, cryptography").Run() == nil {
			return py
		}
	}
	t.Fatal("no python3 with jwt and requests: apt-get install python3-jwt python3-requests python3-cryptography")
	return ""
}

// pythonKey creates a namespace of its own with a policy (TestDocs removes and restores
// the default one meanwhile) and a ServiceKey for the API, and returns its key file.
func pythonKey(t *testing.T, audience string) (*v1.ServiceKey, string) {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "py-client", Labels: map[string]string{"e2e": "py-client"}}}
	policy := testenv.OpenPolicy("py-client", map[string]string{"e2e": "py-client"})
	ttl := metav1.Duration{Duration: time.Minute}
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "caller", Namespace: ns.Name},
		Spec: v1.ServiceKeySpec{Scopes: []string{"read"}, Audiences: []string{audience}, AccessTokenTTL: &ttl}}
	for _, obj := range []client.Object{ns, policy, sk} {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, sk); _ = env.Client.Delete(ctx, policy) })
	sk = waitFor(t, sk, "Ready", func(sk *v1.ServiceKey) bool { return ready(sk, v1.ReasonIssued) })
	return sk, keyFile(t, sk, "python.json")
}

// startResourceServer builds and runs examples/resource-server on a free port, its
// audience its own URL, and returns that URL once it listens.
func startResourceServer(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir, "./examples/resource-server")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the resource server: %v\n%s", err, out)
	}
	ports, err := testenv.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	api := "http://" + ports[0]
	// A leeway of a second: the token is expired a second after its minute, not 30.
	srv := exec.Command(filepath.Join(dir, "resource-server"), "--issuer", installed.Issuer, "--audience", api,
		"--listen", strings.TrimPrefix(api, "http://"), "--leeway=1s")
	testenv.DieWithParent(srv)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		if err := <-exited; err == nil {
			t.Log("the resource server had exited by itself")
		}
	})
	testenv.Eventually(t, "the resource server listens", func() (bool, string) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the resource server exited: %v", err)
		default:
		}
		c, err := net.DialTimeout("tcp", ports[0], time.Second)
		if err != nil {
			return false, err.Error()
		}
		_ = c.Close()
		return true, ""
	})
	return api
}

func cachedToken(t *testing.T, cache string) string {
	t.Helper()
	data, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(data, &c); err != nil || c.AccessToken == "" {
		t.Fatalf("the token cache holds no token: %v", err)
	}
	return c.AccessToken
}

// bearerGet returns the status and WWW-Authenticate challenge of a GET with the token.
func bearerGet(url, token string) (int, string) {
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}
