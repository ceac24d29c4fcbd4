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

// Package testenv starts the project's test control plane: a real kube-apiserver and
// etcd (built by hack/envtest-build.sh, found through KUBEBUILDER_ASSETS) with the
// generated CRDs installed. Integration tests of every package share it so they all
// run against the same real API server the same way.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	authv1alpha1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// Env is a running control plane and a client for it.
type Env struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Client is a controller-runtime client with core and ServiceKey types registered.
	Client client.Client
	// Scheme knows core types and ServiceKeys.
	Scheme *k8sruntime.Scheme
	// KubeConfig is a kubeconfig file's content for the same cluster-admin access, for
	// processes started outside the test (the demo runs the real binary with it).
	KubeConfig []byte

	env     *envtest.Environment
	certDir string
}

// ErrNoAssets explains how to get the control plane binaries when they are missing.
var ErrNoAssets = errors.New("KUBEBUILDER_ASSETS is not set: run the tests with 'make test', " +
	"which builds kube-apiserver and etcd once (hack/envtest-build.sh) and points KUBEBUILDER_ASSETS at them")

// Start starts kube-apiserver and etcd and installs the CRDs from config/crd/bases.
// Call Stop when done (usually from TestMain).
func Start() (*Env, error) {
	return start([]string{filepath.Join(RepoRoot(), "config", "crd", "bases")})
}

// StartWithoutCRDs starts an empty control plane, for installing the CRD the way
// users do (the Helm chart in the demo and the e2e test).
func StartWithoutCRDs() (*Env, error) {
	return start(nil)
}

func start(crdPaths []string) (*Env, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, ErrNoAssets
	}
	scheme := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register core types: %w", err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register CRD types: %w", err)
	}
	if err := authv1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register ServiceKey types: %w", err)
	}
	// A certificate directory of our own survives StopAPIServer, so the restarted API
	// server keeps its serving certificate and every client configured before works.
	certDir, err := os.MkdirTemp("", "servicekey-apiserver-")
	if err != nil {
		return nil, fmt.Errorf("create the API server's certificate directory: %w", err)
	}
	e := &envtest.Environment{
		CRDDirectoryPaths:     crdPaths,
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	e.ControlPlane.APIServer = &envtest.APIServer{CertDir: certDir}
	cfg, err := e.Start()
	if err != nil {
		_ = os.RemoveAll(certDir)
		return nil, fmt.Errorf("start kube-apiserver and etcd from %s: %w", os.Getenv("KUBEBUILDER_ASSETS"), err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = e.Stop()
		_ = os.RemoveAll(certDir)
		return nil, fmt.Errorf("create client: %w", err)
	}
	return &Env{Config: cfg, Client: c, Scheme: scheme, KubeConfig: e.KubeConfig, env: e, certDir: certDir}, nil
}

// Stop stops the control plane.
func (e *Env) Stop() error {
	err := e.env.Stop()
	_ = os.RemoveAll(e.certDir)
	if err != nil {
		return fmt.Errorf("stop control plane: %w", err)
	}
	return nil
}

// RepoRoot is the repository's top directory, found from this file's location so
// tests work from any package directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// KubeconfigAs writes into dir a kubeconfig that acts as the given user (a component's
// ServiceAccount, or one with no rights at all) through impersonation by the admin,
// and returns its path.
func (e *Env) KubeconfigAs(dir, user string) (string, error) {
	cfg, err := clientcmd.Load(e.KubeConfig)
	if err != nil {
		return "", fmt.Errorf("parse kubeconfig: %w", err)
	}
	for _, auth := range cfg.AuthInfos {
		auth.Impersonate = user
	}
	path := filepath.Join(dir, "kubeconfig-"+filepath.Base(user))
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("write kubeconfig for %s: %w", user, err)
	}
	return path, nil
}
