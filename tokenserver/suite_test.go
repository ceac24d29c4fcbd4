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

package tokenserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/controllers"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

const (
	ns         = "apps"
	systemNS   = "servicekey-system"
	signingKey = "servicekey-token-signing"
	tsUser     = "system:serviceaccount:servicekey-system:servicekey-operator-token-server"
	// openLabel marks the namespaces the suite's open policy selects.
	openLabel = "servicekey.test/open"
	// stoppableNS is left to a controller its test stops (the suite's never sees it).
	stoppableNS = "stoppable"
)

var (
	// env is the control plane, for tests that start their own controller.
	testEnv *testenv.Env
	// serverConfig and testScheme start more token servers (the client kit's tests).
	serverConfig *rest.Config
	testScheme   *runtime.Scheme
	// asServer is a client with exactly the token server's permissions.
	asServer client.Client
	k8s      client.Client
	server   *tokenserver.Running
	baseURL  string
	tokenURL string
	logs     = &testenv.LogBuffer{}
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testenv.FuzzingOnly() { // fuzz targets are pure: no control plane for them or their workers
		os.Exit(m.Run())
	}
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	return testenv.RunSuite(m, logs, controllers.MaxLogVerbosity, setup)
}

func setup(ctx context.Context, env *testenv.Env) error {
	k8s, testEnv = env.Client, env
	for _, n := range []string{ns, systemNS} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{openLabel: "true"}}}); err != nil {
			return err
		}
	}
	// Tests not about policy run in namespaces an open policy selects, as on a
	// single-tenant install with the chart's default policy.
	if err := k8s.Create(ctx, testenv.OpenPolicy("open", map[string]string{openLabel: "true"})); err != nil {
		return err
	}
	introspection := testenv.OpenPolicy("introspection", map[string]string{openLabel: "true"})
	introspection.Spec.Allowed = v1.AllowedPrivileges{Scopes: []string{tokenserver.DefaultIntrospectionScope,
		tokenserver.DefaultIntrospectionScope + ":https://api.test", tokenserver.DefaultIntrospectionScope + ":https://billing.test"}, Audiences: []string{"*"}}
	if err := k8s.Create(ctx, introspection); err != nil {
		return err
	}
	if err := writeSigningSecret(ctx, newSigningPEM()); err != nil {
		return err
	}
	// The token endpoint URL is the real listener's, so key files carry it as
	// token_uri and clients use it unchanged as TokenURL and audience.
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	baseURL = "http://" + addr
	tokenURL = baseURL + "/oauth2/token"
	if _, err := startController(ctx, env, nil); err != nil {
		return err
	}
	cfg, err := asTokenServer(ctx, env)
	if err != nil {
		return err
	}
	serverConfig, testScheme = cfg, env.Scheme
	issuer := "https://token.test"
	server, err = tokenserver.Start(ctx, cfg, env.Scheme, tokenserver.Options{
		Issuer: issuer, Listen: addr, TokenURL: tokenURL,
		SigningSecret: types.NamespacedName{Namespace: systemNS, Name: signingKey},
		MaxTTL:        time.Hour, DefaultAudience: []string{"https://api.test"}, ReplayCacheSize: 1000, ReplayPerClient: 1000,
		LastUsedGranularity: time.Hour, MetricsListen: "127.0.0.1:0",
		Clock: clock.RealClock{}, Log: ctrl.Log.WithName("token-server"),
	})
	return err
}

// freeAddr picks a free loopback port for the token server.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String(), nil
}

// startController runs the ServiceKey controller until ctx is done: the suite's for
// every namespace but stoppableNS, or (namespaces set) a test's own, which it stops.
// It returns a channel closed when the manager has stopped.
func startController(ctx context.Context, env *testenv.Env, namespaces []string) (<-chan struct{}, error) {
	opts := controllers.CacheOptions()
	opts.DefaultNamespaces = map[string]cache.Config{
		cache.AllNamespaces: {},
		stoppableNS:         {LabelSelector: labels.SelectorFromSet(labels.Set{"servicekey.test/unwatched": "never"})},
	}
	if namespaces != nil {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, n := range namespaces {
			opts.DefaultNamespaces[n] = cache.Config{}
		}
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Cache: opts,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, err
	}
	r := &controllers.ServiceKeyReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: clock.RealClock{},
		Keys: controllers.RSAKeys{}, Config: controllers.Config{TokenURI: tokenURL},
	}
	if err := r.SetupWithManager(mgr, 2); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return nil, errors.New("the controller's cache did not sync")
	}
	return done, nil
}

// asTokenServer binds the generated RBAC (config/rbac/token-server: a ClusterRole for
// ServiceKeys and a Role that reads only the signing-key Secret by name) to a user and
// impersonates it, so every test here proves the server needs nothing more.
func asTokenServer(ctx context.Context, env *testenv.Env) (*rest.Config, error) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "token-server", "role.yaml"))
	if err != nil {
		return nil, err
	}
	role, secretRole := &rbacv1.ClusterRole{}, &rbacv1.Role{}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return nil, err
		}
		target := map[string]any{"ClusterRole": role, "Role": secretRole}[meta.Kind]
		if target == nil {
			continue
		}
		if err := yaml.Unmarshal([]byte(doc), target); err != nil {
			return nil, err
		}
	}
	if secretRole.Namespace != systemNS || len(secretRole.Rules) != 1 || secretRole.Rules[0].ResourceNames[0] != signingKey {
		return nil, fmt.Errorf("generated Role is not limited to %s/%s: %+v", systemNS, signingKey, secretRole)
	}
	for _, r := range role.Rules {
		if slices.Contains(r.Resources, "secrets") {
			return nil, fmt.Errorf("generated ClusterRole grants Secrets: %+v", r)
		}
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: tsUser}}
	objs := []client.Object{
		role, secretRole,
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: secretRole.Name, Namespace: systemNS}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: secretRole.Name}},
	}
	for _, o := range objs {
		if err := k8s.Create(ctx, o); err != nil {
			return nil, fmt.Errorf("create %T: %w", o, err)
		}
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: tsUser}
	asServer, err = client.New(cfg, client.Options{Scheme: env.Scheme})
	return cfg, err
}

func newSigningPEM() []byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// writeSigningSecret creates or replaces the signing-key Secret's data.
func writeSigningSecret(ctx context.Context, current []byte, others ...[]byte) error {
	data := map[string][]byte{tokenserver.SigningCurrent: current}
	if len(others) > 0 {
		data[tokenserver.SigningPrevious] = others[0]
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: signingKey, Namespace: systemNS}}
	_, err := ctrl.CreateOrUpdate(ctx, k8s, s, func() error { s.Data = data; return nil })
	return err
}

func getSigningSecret(ctx context.Context) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := k8s.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: signingKey}, s)
	return s, err
}
