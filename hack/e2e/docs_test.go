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
	"github.com/servicekey-operator/servicekey-operator/hack/docstest"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// TestDocs runs the marked recipes of README.md and docs/*.md, page by page, against
// the installed chart with both components running, as a user at a terminal with
// kubectl, helm, the servicekey-operator binary, openssl, curl, Go and Debian's Python
// would. Pages that need pods (needs=node) are left to make test-cluster. It runs in
// parallel with TestPythonClient only, after every other test of the suite. kubectl and
// helm use the admin kubeconfig the chart was installed with.
func TestDocs(t *testing.T) {
	t.Parallel()
	probe, probeFile := probeKey(t, "docs-probe")
	waitUsable(t, probe, probeFile)
	root := testenv.RepoRoot()
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	r := &docstest.Runner{Repo: root, Dir: t.TempDir(), Env: docsEnv(t), Timeout: 3 * time.Minute}
	var total docstest.Result
	for _, path := range append([]string{filepath.Join(root, "README.md")}, pages...) {
		rel, _ := filepath.Rel(root, path)
		page, err := docstest.ReadPage(root, rel)
		if err != nil {
			t.Fatal(err)
		}
		if page.Needs != "" && rel != filepath.Join("docs", "quickstart.md") {
			t.Errorf("%s needs %s, but only docs/quickstart.md runs on a node (TestQuickstart)", rel, page.Needs)
		}
		if page.Needs != "" {
			run, skipped := page.Count()
			t.Logf("%s: needs %s: its %d blocks (%d run, %d skipped) are make test-cluster's", rel, page.Needs, run+skipped, run, skipped)
			continue
		}
		res, err := r.RunPage(context.Background(), page, t.Logf)
		if err != nil {
			t.Error(err)
		}
		restoreDefaultPolicy(t)
		if err != nil {
			t.FailNow()
		}
		t.Logf("%s: %d blocks run, %d skipped %s", rel, res.Run, res.Skipped, strings.Join(res.Skips, "; "))
		total.Run, total.Skipped = total.Run+res.Run, total.Skipped+res.Skipped
	}
	t.Logf("all pages: %d blocks run, %d skipped", total.Run, total.Skipped)
	if total.Run == 0 {
		t.Fatal("no block ran: the markers are not being read")
	}
}

// waitUsable waits until the token server answers a grant of the key file, and logs
// how long that took after the ServiceKey was created. TestDocs and TestPythonClient
// run last, after fault tests that stop the API server; the token server's watches
// resume only after client-go's back-off, so a key (or a namespace) created right
// after may be unknown to it for a while.
func waitUsable(t *testing.T, sk *v1.ServiceKey, keyFile string) {
	t.Helper()
	if err := testenv.Poll("the token server answers a grant of "+sk.Namespace+"/"+sk.Name, 2*time.Minute, func() (bool, string) {
		_, stderr, err := runCLI(keyFile)
		return err == nil, stderr
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s/%s was usable %.1fs after it was created", sk.Namespace, sk.Name, time.Since(sk.CreationTimestamp.Time).Seconds())
}

// probeKey creates a ServiceKey in a namespace of its own, both new, under the
// chart's default policy, and returns it Ready with its key file.
func probeKey(t *testing.T, namespace string) (*v1.ServiceKey, string) {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: namespace}}
	for _, obj := range []client.Object{ns, sk} {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	sk = waitFor(t, sk, "Ready", func(sk *v1.ServiceKey) bool { return ready(sk, v1.ReasonIssued) })
	return sk, keyFile(t, sk, namespace+".json")
}

// docsEnv is a terminal's environment: the tools under the names the docs use (python3
// is one with python3-jwt and python3-requests), the admin kubeconfig, Go's caches,
// and ISSUER for the pages that declare <issuer>=$ISSUER.
func docsEnv(t *testing.T) []string {
	t.Helper()
	path, err := docstest.ToolPath(t.TempDir(), map[string]string{
		"kubectl":             filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"),
		"helm":                helmPath,
		"servicekey-operator": binary,
		"python3":             python(t),
	}, goBin(t))
	if err != nil {
		t.Fatal(err)
	}
	vars := []string{
		path,
		"KUBECONFIG=" + filepath.Join(workDir, "kubeconfig"),
		"ISSUER=" + installed.Issuer,
		"LANG=C.UTF-8",
	}
	for _, name := range []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GOFLAGS", "GOTOOLCHAIN"} {
		out, err := exec.Command("go", "env", name).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", name, err)
		}
		vars = append(vars, name+"="+strings.TrimSpace(string(out)))
	}
	return vars
}

func goBin(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(path)
}

// restoreDefaultPolicy puts back the chart's default policy after a page (the
// multi-tenant recipe removes it), as its docs say: from config/samples.
func restoreDefaultPolicy(t *testing.T) {
	t.Helper()
	cmd := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), "apply", "--server-side",
		"-f", filepath.Join(testenv.RepoRoot(), "config", "samples", "auth_v1alpha1_servicekeypolicy_default.yaml"))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(workDir, "kubeconfig"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore the default policy: %v: %s", err, out)
	}
}
