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
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/servicekey-operator/servicekey-operator/hack/docstest"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// kubectl runs kubectl in the quickstart's namespace and returns its output, errors
// included (for a failure message).
func kubectl(t *testing.T, n *node, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(os.Getenv("CLUSTER_ASSETS"), "kubectl"),
		append([]string{"--kubeconfig", n.Kubeconfig, "-n", "demo"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s(kubectl: %v)", out, err)
	}
	return string(out)
}

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
	// The chart's own image is the one under test by default (TestOnARealNode asserts
	// the pods run it); the page's manifests must name the examples' image under test.
	var run strings.Builder
	for _, b := range p.Blocks {
		if b.Kind == docstest.Run {
			run.WriteString(b.Text)
		}
	}
	if !strings.Contains(run.String(), "image: "+examplesImage) {
		t.Errorf("the quickstart's manifests do not run the image under test %s", examplesImage)
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
		t.Fatalf("%v\nthe API's access log:\n%s", err, kubectl(t, n, "logs", "--prefix", "-l", "app=hello"))
	}
	t.Logf("%s: %d blocks run, %d skipped %s", page, res.Run, res.Skipped, strings.Join(res.Skips, "; "))
	if res.Run == 0 {
		t.Fatal("no block of the quickstart ran")
	}
	// The page reads the pod that succeeded; a failed attempt before it is a defect too.
	job, err := n.Clientset.BatchV1().Jobs("demo").Get(context.Background(), "call-hello", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if job.Status.Failed > 0 {
		t.Errorf("call-hello failed %d attempt(s) before it succeeded\n%s", job.Status.Failed, kubectl(t, n, "logs", "--prefix", "--all-containers", "-l", "job-name=call-hello"))
	}
}
