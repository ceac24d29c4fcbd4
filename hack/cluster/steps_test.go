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
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/cluster"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

const (
	controllerPods  = "app.kubernetes.io/component=controller"
	tokenServerPods = "app.kubernetes.io/component=token-server"
)

// TestOnARealNode runs the chart's Deployments as pods on a real node and a workload
// that mounts its ServiceKey's Secret, in the order a user meets them. Each step needs
// the ones before it.
func TestOnARealNode(t *testing.T) {
	n := startNode(t)
	steps := []struct {
		name string
		run  func(*testing.T, *node)
	}{
		{"helm install --wait: both Deployments Ready through their probes, restricted", installChart},
		{"a workload mounting its key gets tokens and calls the API", startWorkload},
		{"a rotation reaches the running pod through the Secret volume", rotate},
		{"a token-server pod deleted under traffic fails no call", deleteTokenServerPod},
		{"helm upgrade and helm uninstall leave no pods", upgradeAndUninstall},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.run(t, n) }) {
			return
		}
	}
}

func installChart(t *testing.T, n *node) {
	ctx := context.Background()
	for _, ns := range []string{systemNS, teamNS} {
		if err := n.client.Create(ctx, restricted(ns)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	n.runHelm(t, "install", release, n.chart, "--namespace", systemNS, "--wait", "--timeout", "5m")
	t.Logf("helm install --wait took %.1fs", time.Since(start).Seconds())
	for _, c := range []struct {
		selector string
		want     int
	}{{controllerPods, 1}, {tokenServerPods, 2}} {
		for _, p := range n.waitPods(t, systemNS, c.selector, c.want) {
			for _, ctr := range p.Spec.Containers {
				sc := ctr.SecurityContext
				if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || p.Spec.SecurityContext.RunAsNonRoot == nil ||
					!*p.Spec.SecurityContext.RunAsNonRoot || ctr.Image != operatorImage {
					t.Errorf("%s/%s: image %s, security context %+v: want %s, a read-only root, non-root", p.Name, ctr.Name, ctr.Image, sc, operatorImage)
				}
			}
			for _, cs := range p.Status.ContainerStatuses {
				if cs.RestartCount != 0 {
					t.Errorf("%s restarted %d times", p.Name, cs.RestartCount)
				}
			}
		}
	}
}

// serviceIP is a Service's ClusterIP.
func (n *node) serviceIP(t *testing.T, ns, name string) string {
	t.Helper()
	svc, err := n.Clientset.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc.Spec.ClusterIP
}

func startWorkload(t *testing.T, n *node) {
	ctx := context.Background()
	if err := n.client.Create(ctx, serviceKey()); err != nil {
		t.Fatal(err)
	}
	sk := waitKeyReady(t, n)
	d, svc := resourceServer()
	for _, o := range []client.Object{d, svc} {
		if err := n.client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	n.waitPods(t, teamNS, "app=resource-server", 1)
	n.checkDNS(t)
	if err := n.client.Create(ctx, workload(sk.Status.SecretName)); err != nil {
		t.Fatal(err)
	}
	pod := onePod(t, n.waitPods(t, teamNS, "app=workload", 1))
	waitFor(t, "the workload's calls succeed", func() (bool, string) {
		calls := n.calls(t, pod.Name)
		if len(calls) < 3 {
			return false, fmt.Sprintf("%d calls", len(calls))
		}
		last := calls[len(calls)-1]
		return last.err == "" && last.key == activeKey(sk), fmt.Sprintf("last call: %+v", last)
	})
}

// checkDNS asks the cluster DNS what the pods ask it: the resource server's Service
// name resolves to its ClusterIP, and a name outside the cluster domain is not found
// (NXDOMAIN: nothing is forwarded). The pods resolve the short forms (<svc>.<ns>.svc)
// through the search path the kubelet gives them.
func (n *node) checkDNS(t *testing.T) {
	t.Helper()
	r := n.DNSResolver()
	name, want := apiHost+"."+cluster.ClusterDomain+".", n.serviceIP(t, teamNS, "resource-server")
	waitFor(t, name+" resolving to "+want, func() (bool, string) {
		addrs, err := r.LookupHost(context.Background(), name)
		if err != nil {
			return false, err.Error()
		}
		return slices.Equal(addrs, []string{want}), fmt.Sprint(addrs)
	})
	_, err := r.LookupHost(context.Background(), "example.com.")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("example.com from the cluster DNS: %v, want not found (NXDOMAIN)", err)
	}
}

// waitKeyReady polls until the ServiceKey is Ready and returns it.
func waitKeyReady(t *testing.T, n *node) *v1.ServiceKey {
	t.Helper()
	sk := &v1.ServiceKey{}
	waitFor(t, "ServiceKey Ready", func() (bool, string) {
		if err := n.client.Get(context.Background(), client.ObjectKey{Namespace: teamNS, Name: keyName}, sk); err != nil {
			return false, err.Error()
		}
		return readyTrue(sk), testenv.ReadyReason(sk)
	})
	return sk
}

func readyTrue(sk *v1.ServiceKey) bool {
	for _, c := range sk.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == metav1.ConditionTrue && c.ObservedGeneration == sk.Generation
		}
	}
	return false
}

func activeKey(sk *v1.ServiceKey) string {
	for _, k := range sk.Status.Keys {
		if k.State == v1.KeyActive {
			return k.KeyID
		}
	}
	return ""
}

// rotate asks for a new key and measures how it reaches the running pod: the
// controller publishes it, the kubelet rewrites the mounted file, the client signs
// its next grant with it. The container is never restarted.
func rotate(t *testing.T, n *node) {
	ctx := context.Background()
	pod := onePod(t, n.pods(t, teamNS, "app=workload"))
	before := activeKey(waitKeyReady(t, n))
	asked := time.Now()
	if err := testenv.UpdateServiceKey(ctx, n.client, client.ObjectKey{Namespace: teamNS, Name: keyName}, func(sk *v1.ServiceKey) {
		if sk.Annotations == nil {
			sk.Annotations = map[string]string{}
		}
		sk.Annotations[v1.AnnotationRotate] = asked.Format(time.RFC3339)
	}); err != nil {
		t.Fatal(err)
	}
	var after string
	waitFor(t, "a new Active key", func() (bool, string) {
		sk := &v1.ServiceKey{}
		if err := n.client.Get(ctx, client.ObjectKey{Namespace: teamNS, Name: keyName}, sk); err != nil {
			return false, err.Error()
		}
		after = activeKey(sk)
		return after != before && after != "" && readyTrue(sk), after
	})
	published := time.Now() // within a poll interval of the status write
	var inFile, used time.Time
	waitFor(t, "the pod signs with the new key", func() (bool, string) {
		inFile, used = time.Time{}, time.Time{}
		for _, c := range n.calls(t, pod.Name) {
			if c.fileKey == after && inFile.IsZero() {
				inFile = c.at
			}
			if c.key == after && c.err == "" && used.IsZero() {
				used = c.at
			}
		}
		return !used.IsZero(), fmt.Sprintf("file updated at %v, used at %v", inFile, used)
	})
	t.Logf("rotation propagation: new key published %.1fs after the annotation; the mounted file held it %.1fs after the annotation "+
		"(the client reads it every 0.5s); the pod's first call with it %.1fs after the annotation (kubelet syncFrequency 10s)",
		published.Sub(asked).Seconds(), inFile.Sub(asked).Seconds(), used.Sub(asked).Seconds())
	now := onePod(t, n.pods(t, teamNS, "app=workload"))
	if now.UID != pod.UID || len(now.Status.ContainerStatuses) != 1 || len(pod.Status.ContainerStatuses) != 1 ||
		now.Status.ContainerStatuses[0].RestartCount != 0 ||
		now.Status.ContainerStatuses[0].ContainerID != pod.Status.ContainerStatuses[0].ContainerID {
		t.Fatalf("the workload pod was replaced or restarted: %+v", now.Status)
	}
}

// deleteTokenServerPod deletes the token-server replicas one at a time, each while the
// other serves and the workload calls twice a second, each call with a newly signed
// grant, and counts failed calls. The workload keeps its connection to one replica,
// so deleting each original replica in turn deletes the one it uses.
func deleteTokenServerPod(t *testing.T, n *node) {
	workload := onePod(t, n.pods(t, teamNS, "app=workload")).Name
	originals := n.pods(t, systemNS, tokenServerPods)
	if len(originals) != 2 {
		t.Fatalf("%d token-server pods, want 2", len(originals))
	}
	for _, victim := range originals {
		deleteUnderTraffic(t, n, workload, victim)
	}
}

func onePod(t *testing.T, pods []corev1.Pod) corev1.Pod {
	t.Helper()
	if len(pods) != 1 {
		t.Fatalf("%d pods, want 1", len(pods))
	}
	return pods[0]
}

func deleteUnderTraffic(t *testing.T, n *node, workload string, victim corev1.Pod) {
	t.Helper()
	from := len(n.calls(t, workload))
	if err := n.Clientset.CoreV1().Pods(systemNS).Delete(context.Background(), victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted pod gone and two replicas Ready", func() (bool, string) {
		pods := n.pods(t, systemNS, tokenServerPods)
		var names []string
		ok := len(pods) == 2
		for _, p := range pods {
			names = append(names, fmt.Sprintf("%s ready=%v", p.Name, ready(p)))
			ok = ok && p.UID != victim.UID && ready(p)
		}
		return ok, strings.Join(names, ", ")
	})
	// Ten more calls after the replacement is Ready, so the window covers its start.
	replaced := time.Now()
	var window []call
	waitFor(t, "ten more calls", func() (bool, string) {
		all := n.calls(t, workload)
		if len(all) < from {
			return false, "log not readable"
		}
		window = all[from:]
		after := 0
		for _, c := range window {
			if c.at.After(replaced) {
				after++
			}
		}
		return after >= 10, fmt.Sprintf("%d calls since the replacement was Ready", after)
	})
	failed := 0
	for _, c := range window {
		if c.err != "" {
			failed++
			t.Errorf("call %d at %s failed: %s", c.n, c.at.Format(time.RFC3339Nano), c.err)
		}
	}
	t.Logf("%d calls while %s was deleted and replaced, %d failed", len(window), victim.Name, failed)
}

func upgradeAndUninstall(t *testing.T, n *node) {
	old := map[types.UID]string{}
	for _, p := range n.pods(t, systemNS, "") {
		old[p.UID] = p.Name
	}
	n.runHelm(t, "upgrade", release, n.chart, "--namespace", systemNS, "--wait", "--timeout", "5m", "--set", "logging.level=debug")
	n.waitPods(t, systemNS, controllerPods, 1)
	n.waitPods(t, systemNS, tokenServerPods, 2)
	waitFor(t, "no pod from before the upgrade", func() (bool, string) {
		var left []string
		for _, p := range n.pods(t, systemNS, "") {
			if name, ok := old[p.UID]; ok {
				left = append(left, name)
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
	n.runHelm(t, "uninstall", release, "--namespace", systemNS, "--wait", "--timeout", "5m")
	waitFor(t, "no pods left by helm uninstall", func() (bool, string) {
		pods := n.pods(t, systemNS, "")
		return len(pods) == 0, fmt.Sprintf("%d pods", len(pods))
	})
	for _, ns := range []string{systemNS, teamNS} {
		if err := n.Clientset.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "no pods left", func() (bool, string) {
		var left []string
		for _, ns := range []string{systemNS, teamNS} {
			for _, p := range n.pods(t, ns, "") {
				left = append(left, ns+"/"+p.Name)
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
	waitFor(t, "no pod sandboxes left on the node", func() (bool, string) {
		count, err := n.Sandboxes(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return count == 0, fmt.Sprintf("%d sandboxes", count)
	})
}
