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
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// TestTokenServerStopsOnASignalDuringStart: a token server whose ServiceAccount may
// not list ServiceKeys (RBAC not applied yet, or wrong) waits for its caches forever;
// SIGTERM must end that wait (the drain after SIGTERM applies only once it serves),
// or the kubelet's SIGKILL at the end of the grace period would be the only way out.
func TestTokenServerStopsOnASignalDuringStart(t *testing.T) {
	kubeconfig, err := env.KubeconfigAs(t.TempDir(), "system:serviceaccount:default:no-rights")
	if err != nil {
		t.Fatal(err)
	}
	ports, err := testenv.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "token-server", "--kubeconfig="+kubeconfig, "--issuer=https://token.test",
		"--listen="+ports[0], "--metrics-bind-address="+ports[1], "--pprof-bind-address="+ports[2])
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	testenv.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	// pprof serves once the signal handler is installed, before the caches are started.
	testenv.Eventually(t, "the token server starting", func() (bool, string) {
		code, body := testenv.HTTPGet("http://" + ports[2] + "/debug/pprof/")
		return code == 200, body
	})
	// The command line may hold --shared-state's password: pprof does not serve it.
	if code, _ := testenv.HTTPGet("http://" + ports[2] + "/debug/pprof/cmdline"); code != 404 {
		t.Errorf("/debug/pprof/cmdline answered %d, want 404", code)
	}
	select {
	case err := <-exited:
		t.Fatalf("the token server ended before the signal (%v): its caches were meant to wait", err)
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		t.Logf("exited after SIGTERM: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the token server still waits for its caches a minute after SIGTERM")
	}
}
