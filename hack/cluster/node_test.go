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
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/cluster"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// node is the cluster and what the steps of TestOnARealNode share.
type node struct {
	*cluster.Cluster
	client client.Client
	helm   string
	chart  string
}

// startNode starts the one-node cluster, imports the images under test, and registers
// its teardown, which must leave nothing behind.
func startNode(t *testing.T) *node {
	t.Helper()
	for _, env := range []string{"CLUSTER_ASSETS", "CLUSTER_NODE", "CLUSTER_HELM", "CLUSTER_IMAGES", "CLUSTER_IMAGE", "CLUSTER_EXAMPLES_IMAGE"} {
		if os.Getenv(env) == "" {
			t.Fatalf("%s is not set: run `make test-cluster`", env)
		}
	}
	ctx := context.Background()
	c, err := cluster.Start(ctx, cluster.Options{Assets: os.Getenv("CLUSTER_ASSETS"), Node: os.Getenv("CLUSTER_NODE"), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.KeepLogs = t.Failed()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	for _, img := range strings.Fields(os.Getenv("CLUSTER_IMAGES")) {
		if err := c.ImportImage(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(c.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return &node{Cluster: c, client: cl, helm: os.Getenv("CLUSTER_HELM"), chart: filepath.Join(testenv.RepoRoot(), "charts", "servicekey-operator")}
}

// runHelm runs the helm binary against the cluster.
func (n *node) runHelm(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(n.helm, append([]string{"--kubeconfig", n.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("helm %s: ok", args[0])
}

// pods lists the pods of a namespace matching the label selector.
func (n *node) pods(t *testing.T, ns, selector string) []corev1.Pod {
	t.Helper()
	list, err := n.Clientset.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func ready(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil
		}
	}
	return false
}

// waitPods polls until the namespace holds exactly want pods matching selector, all
// Ready, none terminating.
func (n *node) waitPods(t *testing.T, ns, selector string, want int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	waitFor(t, fmt.Sprintf("%d Ready pods in %s (%s)", want, ns, selector), func() (bool, string) {
		pods = n.pods(t, ns, selector)
		var states []string
		ok := len(pods) == want
		for _, p := range pods {
			states = append(states, fmt.Sprintf("%s ready=%v", p.Name, ready(p)))
			ok = ok && ready(p)
		}
		return ok, strings.Join(states, ", ")
	})
	return pods
}

// call is one line of the example client's --interval log.
type call struct {
	at           time.Time
	n            int
	key, fileKey string
	err          string
}

var callLine = regexp.MustCompile(`^(\S+) call=(\d+) key=(\S*) file_key=(\S*) (status|error)=(.*)$`)

// calls reads the workload pod's log through the API server (and so the kubelet);
// nil while the log cannot be read (the container is starting).
func (n *node) calls(t *testing.T, pod string) []call {
	t.Helper()
	raw, err := n.Clientset.CoreV1().Pods(teamNS).GetLogs(pod, &corev1.PodLogOptions{}).Do(context.Background()).Raw()
	if err != nil {
		t.Logf("logs of %s: %v", pod, err)
		return nil
	}
	var out []call
	for _, l := range strings.Split(string(raw), "\n") {
		m := callLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		at, _ := time.Parse(time.RFC3339Nano, m[1])
		c := call{at: at, key: m[3], fileKey: m[4]}
		_, _ = fmt.Sscan(m[2], &c.n)
		if m[5] == "error" {
			c.err = m[6]
		} else if !strings.HasPrefix(m[6], `"200 OK"`) {
			c.err = m[6]
		}
		out = append(out, c)
	}
	return out
}

// waitFor polls cond every quarter second (each poll may read a pod's log through the
// kubelet) until it holds, failing the test after two minutes: the kubelet's Secret
// volume sync and pod starts take seconds here, not milliseconds.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	if err := testenv.PollEvery(what, 2*time.Minute, 250*time.Millisecond, cond); err != nil {
		t.Fatal(err)
	}
}
