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

// Package stack installs the Helm chart on a local control plane and runs both
// components as local processes, each authenticated as the chart's own ServiceAccount
// (impersonation), with the command-line flags the chart renders for its Deployments.
// The demo and the e2e test use it, so both exercise what `helm install` ships: the
// CRD, the RBAC, and the wiring of issuer and token URL into both components.
package stack

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// Release and Namespace are where the chart is installed, the names the docs use.
const (
	Release   = "servicekey-operator"
	Namespace = "servicekey-system"
)

// CRDName is the ServiceKey CRD the chart installs.
const CRDName = "servicekeys.auth.servicekey.dev"

// Options say what to install and where the local processes listen.
type Options struct {
	// Env is the running control plane (started without CRDs: the chart brings it).
	Env *testenv.Env
	// Helm and Binary are the helm and servicekey-operator executables.
	Helm, Binary string
	// Dir holds kubeconfigs and logs.
	Dir string
	// TokenAddress is where the token server listens (host:port); the chart's issuer
	// is set to http://TokenAddress so key files point at it.
	TokenAddress string
	// ControllerMetrics, ControllerProbes and TokenMetrics are the other listeners.
	ControllerMetrics, ControllerProbes, TokenMetrics string
	// ControllerArgs and TokenServerArgs are flags appended to the chart's (a
	// benchmark's --pprof-bind-address).
	ControllerArgs, TokenServerArgs []string
	// Set are extra `helm install --set` values.
	Set []string
	// Log receives helm's output.
	Log io.Writer
}

// Stack is an installed chart and, after Start, its two running components.
type Stack struct {
	opts Options
	// Issuer is the issuer the chart was installed with.
	Issuer string
	// Manifest is what the chart installed (`helm get manifest`).
	Manifest Objects
	// Controller and TokenServer are the chart's components as rendered.
	Controller, TokenServer Component
	procs                   []*process
}

// Component is one Deployment of the chart.
type Component struct {
	// Name is the Deployment's name.
	Name string
	// ServiceAccount is the Deployment's ServiceAccount, as a username:
	// system:serviceaccount:<namespace>:<name>.
	ServiceAccount string
	// Args are the container's arguments, subcommand first.
	Args []string
	// Log is the process's log file once started.
	Log string
}

// ChartDir is the chart in this repository.
func ChartDir() string { return filepath.Join(testenv.RepoRoot(), "charts", "servicekey-operator") }

// Install lints and installs the chart with the issuer at http://TokenAddress, reads
// back the installed manifest, and waits until the CRD is served.
func Install(ctx context.Context, o Options) (*Stack, error) {
	admin := filepath.Join(o.Dir, "kubeconfig")
	if err := os.WriteFile(admin, o.Env.KubeConfig, 0o600); err != nil {
		return nil, fmt.Errorf("write kubeconfig: %w", err)
	}
	s := &Stack{opts: o, Issuer: "http://" + o.TokenAddress}
	set := append([]string{"issuer=" + s.Issuer}, o.Set...)
	if err := s.Helm(ctx, append([]string{"lint", ChartDir(), "--strict"}, setArgs(set)...)...); err != nil {
		return nil, err
	}
	install := []string{"install", Release, ChartDir(), "--namespace", Namespace, "--create-namespace"}
	if err := s.Helm(ctx, append(install, setArgs(set)...)...); err != nil {
		return nil, err
	}
	out, err := s.HelmOutput(ctx, "get", "manifest", Release, "--namespace", Namespace)
	if err != nil {
		return nil, err
	}
	if s.Manifest, err = ParseObjects(out); err != nil {
		return nil, err
	}
	if s.Controller, err = s.Manifest.Component(Release + "-controller"); err != nil {
		return nil, err
	}
	if s.TokenServer, err = s.Manifest.Component(Release + "-token-server"); err != nil {
		return nil, err
	}
	return s, waitEstablished(ctx, o.Env.Client)
}

// Helm runs helm against the control plane, its output to Options.Log.
func (s *Stack) Helm(ctx context.Context, args ...string) error {
	cmd := s.helmCmd(ctx, args)
	cmd.Stdout, cmd.Stderr = s.opts.Log, s.opts.Log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("helm %s: %w", args[0], err)
	}
	return nil
}

// HelmOutput runs helm and returns its standard output; an error carries helm's
// standard error.
func (s *Stack) HelmOutput(ctx context.Context, args ...string) ([]byte, error) {
	cmd := s.helmCmd(ctx, args)
	var stderr bytes.Buffer
	cmd.Stderr = io.MultiWriter(s.opts.Log, &stderr)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm %s: %w: %s", args[0], err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

func (s *Stack) helmCmd(ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, s.opts.Helm, append(args, "--kubeconfig", filepath.Join(s.opts.Dir, "kubeconfig"))...) //nolint:gosec // the pinned helm from bin/
	// Keep helm's cache and config out of the user's home.
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(s.opts.Dir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(s.opts.Dir, "helm", "config"), "HELM_DATA_HOME="+filepath.Join(s.opts.Dir, "helm", "data"))
	return cmd
}

func setArgs(set []string) []string {
	var args []string
	for _, v := range set {
		args = append(args, "--set", v)
	}
	return args
}

// waitEstablished polls the CRD until the API server serves ServiceKeys.
func waitEstablished(ctx context.Context, c client.Client) error {
	return testenv.Poll("the chart's CRD to be established", time.Minute, func() (bool, string) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: CRDName}, crd); err != nil {
			return false, err.Error()
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, ""
			}
		}
		return false, "not established"
	})
}
