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
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
	"github.com/servicekey-operator/servicekey-operator/verifier"
)

// TestFlow walks the flow of the README on the installed chart: apply the sample
// ServiceKey, wait for Ready, read key.json from the Secret, get a token with the
// CLI, verify it through the JWKS, rotate, and revoke (suspend, then delete).
func TestFlow(t *testing.T) {
	ctx := context.Background()
	sk := applySample(t, "auth_v1alpha1_servicekey_minimal.yaml")
	sk = waitFor(t, sk, "Ready with one key", func(sk *v1.ServiceKey) bool { return ready(sk, v1.ReasonIssued) && len(sk.Status.Keys) == 1 })
	first := keyFile(t, sk, "first.json")

	v, err := verifier.New(ctx, verifier.Options{Issuer: installed.Issuer, Audience: installed.Issuer})
	if err != nil {
		t.Fatalf("verifier from the token server's metadata: %v", err)
	}
	api := httptest.NewServer(v.Require("invoices:read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := verifier.ClaimsFrom(r.Context())
		_, _ = io.WriteString(w, c.Subject)
	})))
	defer api.Close()
	var tokens []string
	tok := cliToken(t, first)
	tokens = append(tokens, tok)
	if got := call(t, api.URL, tok); got != "system:servicekey:default:billing" {
		t.Fatalf("protected API answered %q, want the ServiceKey's subject", got)
	}

	annotate(t, sk, v1.AnnotationRotate, "e2e-1")
	sk = waitFor(t, sk, "a new Active key and the old one Retiring", func(sk *v1.ServiceKey) bool { return len(sk.Status.Keys) == 2 })
	second := keyFile(t, sk, "second.json")
	for name, kf := range map[string]string{"new key": second, "retiring key": first} {
		tok := cliToken(t, kf)
		tokens = append(tokens, tok)
		if got := call(t, api.URL, tok); got != "system:servicekey:default:billing" {
			t.Errorf("%s: protected API answered %q", name, got)
		}
	}

	patchSpec(t, sk, func(sk *v1.ServiceKey) { sk.Spec.Suspended = true })
	waitFor(t, sk, "Ready=False Suspended", func(sk *v1.ServiceKey) bool { return ready(sk, v1.ReasonSuspended) })
	waitRefused(t, second)
	if err := env.Client.Delete(ctx, sk); err != nil {
		t.Fatal(err)
	}
	waitRefused(t, second)
	assertNoSecretsLogged(t, tokens)
}

func applySample(t *testing.T, file string) *v1.ServiceKey {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", file))
	if err != nil {
		t.Fatal(err)
	}
	sk := &v1.ServiceKey{}
	if err := yaml.UnmarshalStrict(data, sk); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(context.Background(), sk); err != nil {
		t.Fatalf("apply %s: %v", file, err)
	}
	return sk
}

func waitFor(t *testing.T, sk *v1.ServiceKey, what string, cond func(*v1.ServiceKey) bool) *v1.ServiceKey {
	t.Helper()
	cur := &v1.ServiceKey{}
	testenv.Eventually(t, what, func() (bool, string) {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(sk), cur); err != nil {
			return false, err.Error()
		}
		reason := testenv.ReadyReason(cur)
		return reason != "" && cond(cur), fmt.Sprintf("Ready reason %q, %d keys", reason, len(cur.Status.Keys))
	})
	return cur
}

func ready(sk *v1.ServiceKey, reason string) bool { return testenv.ReadyReason(sk) == reason }

// keyFile writes the ServiceKey Secret's key.json where a pod would mount it.
func keyFile(t *testing.T, sk *v1.ServiceKey, name string) string {
	t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: sk.Namespace, Name: sk.Status.SecretName}, s); err != nil {
		t.Fatalf("read the key Secret: %v", err)
	}
	kf, err := keyutil.ParseKeyFile(s.Data[v1.SecretKeyJSON])
	if err != nil {
		t.Fatalf("key.json: %v", err)
	}
	if want := installed.Issuer + "/oauth2/token"; kf.TokenURI != want {
		t.Errorf("token_uri = %q, want %q (the chart's issuer wired into the controller)", kf.TokenURI, want)
	}
	path := filepath.Join(workDir, name)
	if err := os.WriteFile(path, s.Data[v1.SecretKeyJSON], 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cliToken runs `servicekey-operator token --key-file F` and returns the token.
func cliToken(t *testing.T, keyFile string) string {
	t.Helper()
	out, stderr, err := runCLI(keyFile)
	if err != nil {
		t.Fatalf("token CLI: %v: %s", err, stderr)
	}
	return strings.TrimSpace(out)
}

func runCLI(keyFile string) (string, string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, "token", "--key-file", keyFile)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// waitRefused polls until the token server refuses the key with invalid_grant (it
// learns of the change through its watch).
func waitRefused(t *testing.T, keyFile string) {
	t.Helper()
	testenv.Eventually(t, "the grant refused with invalid_grant", func() (bool, string) {
		_, stderr, err := runCLI(keyFile)
		return err != nil && strings.Contains(stderr, "invalid_grant"), stderr
	})
}

// call sends a GET with the token to the verifier-protected API.
func call(t *testing.T, url, token string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("protected API: %s %s: %s", resp.Status, resp.Header.Get("WWW-Authenticate"), body)
	}
	return string(body)
}

func annotate(t *testing.T, sk *v1.ServiceKey, key, value string) {
	t.Helper()
	patchSpec(t, sk, func(sk *v1.ServiceKey) { metav1.SetMetaDataAnnotation(&sk.ObjectMeta, key, value) })
}

// patchSpec changes the ServiceKey as an admin would.
func patchSpec(t *testing.T, sk *v1.ServiceKey, change func(*v1.ServiceKey)) {
	t.Helper()
	if err := testenv.UpdateServiceKey(context.Background(), env.Client, client.ObjectKeyFromObject(sk), change); err != nil {
		t.Fatal(err)
	}
}

// assertNoSecretsLogged checks both components' logs for key material and tokens.
func assertNoSecretsLogged(t *testing.T, tokens []string) {
	t.Helper()
	for _, path := range []string{installed.Controller.Log, installed.TokenServer.Log} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			t.Fatalf("%s is empty: the leak check would prove nothing", path)
		}
		if bytes.Contains(data, []byte("PRIVATE KEY")) {
			t.Errorf("%s contains a private key", path)
		}
		for _, tok := range tokens {
			if bytes.Contains(data, []byte(tok)) || bytes.Contains(data, []byte(strings.Split(tok, ".")[2])) {
				t.Errorf("%s contains an access token", path)
			}
		}
	}
}
