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

package cluster

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// TestStaleRunIsCleanedUp kills a cluster's components the way a CI timeout does (its
// test process, and with it every component, gone at once) while a pod runs, and then
// starts another cluster: it must remove what the first left, so that once the second
// is torn down the host is as it was before the first.
func TestStaleRunIsCleanedUp(t *testing.T) {
	ctx := context.Background()
	o := Options{Assets: os.Getenv("CLUSTER_ASSETS"), Node: os.Getenv("CLUSTER_NODE"), Logf: t.Logf}
	first, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "left-running", Namespace: "default"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "pause", Image: SandboxImage, ImagePullPolicy: corev1.PullNever}}}}
	if _, err := first.Clientset.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Poll("the pod running", timeoutShort, func() (bool, string) {
		p, err := first.Clientset.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase)
	}); err != nil {
		t.Fatal(err)
	}
	if len(staleProcs(o)) == 0 || len(first.mounts()) == 0 {
		t.Fatal("a running pod should have processes in the cgroup root and mounts under the directory")
	}

	// The crash: every component SIGKILLed, no teardown, the owner gone.
	for _, p := range first.procs {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := first.writeOwner(dead.Process.Pid); err != nil {
		t.Fatal(err)
	}

	second, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("start after a crashed run: %v", err)
	}
	if _, err := os.Stat(first.Dir); !os.IsNotExist(err) {
		t.Errorf("the crashed run's directory %s is still there (%v)", first.Dir, err)
	}
	if err := second.Stop(ctx); err != nil {
		t.Fatalf("teardown of the second cluster: %v", err)
	}
	// Against the snapshot taken before the first: nothing of either run is left.
	first.procs = nil
	if err := first.leftovers(); err != nil {
		t.Fatalf("after the crashed run and a clean one: %v", err)
	}
}
