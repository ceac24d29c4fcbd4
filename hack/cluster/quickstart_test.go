//go:build cluster

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

package cluster_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/servicekey-operator/servicekey-operator/hack/docstest"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// TestQuickstart runs docs/quickstart.md as written on a cluster of its own: from helm
// install to a pod calling the protected API, with kubectl and helm at the cluster's
// admin kubeconfig and the images make image built (imported as a user loads them).
func TestQuickstart(t *testing.T) {
	n := startNode(t)
	root := testenv.RepoRoot()
	page := filepath.Join("docs", "quickstart.md")
	p, err := docstest.ReadPage(root, page)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, page))
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range []string{operatorImage, examplesImage} {
		if !strings.Contains(string(data), img) {
			t.Errorf("the quickstart does not use the image under test %s", img)
		}
	}
	path, err := docstest.ToolPath(t.TempDir(), map[string]string{
		"kubectl": filepath.Join(os.Getenv("CLUSTER_ASSETS"), "kubectl"), "helm": n.helm,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &docstest.Runner{Repo: root, Dir: t.TempDir(), Timeout: 5 * time.Minute,
		Env: []string{path, "KUBECONFIG=" + n.Kubeconfig, "LANG=C.UTF-8"}}
	res, err := r.RunPage(context.Background(), p, t.Logf)
	if err != nil {
		out, _ := exec.Command(filepath.Join(os.Getenv("CLUSTER_ASSETS"), "kubectl"), "--kubeconfig", n.Kubeconfig,
			"-n", "demo", "logs", "--prefix", "--all-containers", "-l", "app=hello").CombinedOutput()
		t.Fatalf("%v\nthe API's log:\n%s", err, out)
	}
	t.Logf("%s: %d blocks run, %d skipped %s", page, res.Run, res.Skipped, strings.Join(res.Skips, "; "))
	if res.Run == 0 {
		t.Fatal("no block of the quickstart ran")
	}
}
