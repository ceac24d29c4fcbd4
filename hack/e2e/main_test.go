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

// Package e2e installs the Helm chart on a local control plane, runs the controller
// and the token server as local processes authenticated as the chart's own
// ServiceAccounts, and walks the whole flow a cluster admin and an application see.
// It also proves the installed RBAC is least privilege and that the chart, the
// kustomize bases and controller-gen's output agree. Run it with `make test-e2e`.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/servicekey-operator/servicekey-operator/hack/stack"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// The suite's shared state, set up by TestMain.
var (
	env       *testenv.Env
	installed *stack.Stack
	workDir   string
	kustomize string
	binary    string
	helmPath  string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	helm, kust, bin := os.Getenv("E2E_HELM"), os.Getenv("E2E_KUSTOMIZE"), os.Getenv("E2E_BINARY")
	if helm == "" || kust == "" || bin == "" {
		fmt.Fprintln(os.Stderr, "E2E_HELM, E2E_KUSTOMIZE and E2E_BINARY must name the tools: run 'make test-e2e'")
		return 2
	}
	kustomize, binary, helmPath = kust, bin, helm
	var err error
	if env, err = testenv.StartWithoutCRDs(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if workDir, err = os.MkdirTemp("", "servicekey-e2e-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(workDir) }()
	if installed, err = setup(helm, bin); err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
		return 1
	}
	defer installed.Stop()
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "component logs:\n%s\n%s\n", installed.Controller.Log, installed.TokenServer.Log)
		printFile(installed.Controller.Log)
		printFile(installed.TokenServer.Log)
	}
	return code
}

func setup(helm, bin string) (*stack.Stack, error) {
	ports, err := testenv.FreePorts(4)
	if err != nil {
		return nil, err
	}
	helmLog, err := os.Create(filepath.Join(workDir, "helm.log"))
	if err != nil {
		return nil, err
	}
	s, err := stack.Install(context.Background(), stack.Options{Env: env, Helm: helm, Binary: bin, Dir: workDir,
		TokenAddress: ports[0], ControllerMetrics: ports[1], ControllerProbes: ports[2], TokenMetrics: ports[3],
		Log: helmLog})
	if err != nil {
		printFile(helmLog.Name())
		return nil, err
	}
	return s, s.Start(context.Background())
}

func printFile(path string) {
	data, _ := os.ReadFile(path)
	fmt.Fprintf(os.Stderr, "--- %s\n%s\n", path, data)
}
