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

package controllers_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
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
)

const (
	// ns is where tests not about policy work: the suite's open policy selects it.
	ns = "keys"
	// openLabel marks the namespaces the open policy selects.
	openLabel = "servicekey.test/open"
	// raceNS is where TestRotationSurvivesConcurrentLastUsedWrite runs its own reconciler.
	raceNS = "race"
	// tokenURI is what the controller writes into key files.
	tokenURI = "https://token.test/oauth2/token"
)

var (
	adminConfig *rest.Config
	testScheme  *runtime.Scheme
	k8s         client.Client
	reconciler  *controllers.ServiceKeyReconciler
	fakeClock   = clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	logs        = &testenv.LogBuffer{}
	metrics     *controllers.Metrics
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	return testenv.RunSuite(m, logs, controllers.MaxLogVerbosity, func(ctx context.Context, env *testenv.Env) error {
		k8s, adminConfig, testScheme = env.Client, env.Config, env.Scheme
		err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{openLabel: "true"}}})
		if err != nil {
			return err
		}
		if err := k8s.Create(ctx, testenv.OpenPolicy("open", map[string]string{openLabel: "true"})); err != nil {
			return err
		}
		reconciler, metrics, err = startManager(ctx, env)
		return err
	})
}

// startManager runs the controllers, wired as main.go wires them but with the fake
// clock.
func startManager(ctx context.Context, env *testenv.Env) (*controllers.ServiceKeyReconciler, *controllers.Metrics, error) {
	opts := controllers.CacheOptions()
	// Every namespace but raceNS, whose ServiceKey only its test's own reconciler may
	// touch: a label no object carries keeps the manager's informers from seeing it.
	opts.DefaultNamespaces = map[string]cache.Config{
		cache.AllNamespaces: {},
		raceNS:              {LabelSelector: labels.SelectorFromSet(labels.Set{"servicekey.test/unwatched": "never"})},
	}
	cfg, err := asControllerUser(context.Background(), env)
	if err != nil {
		return nil, nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:     env.Scheme,
		Cache:      opts,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, nil, err
	}
	m := controllers.NewMetrics(mgr.GetCache())
	m.Clock = fakeClock
	r := &controllers.ServiceKeyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("servicekey-operator"),
		Clock:     fakeClock,
		Keys:      generated,
		Config:    controllers.Config{TokenURI: tokenURI},
		Metrics:   m,
	}
	if err := r.SetupWithManager(mgr, 2); err != nil {
		return nil, nil, err
	}
	pr := &controllers.PolicyReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("servicekey-operator")}
	if err := pr.SetupWithManager(mgr); err != nil {
		return nil, nil, err
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return nil, nil, fmt.Errorf("the manager's cache did not sync")
	}
	return r, m, nil
}

// generated counts the key pairs the suite's controller makes, for the tests that
// assert one key per issue and per rotation whatever the faults.
var generated = &countingKeys{}

// controllerUser is bound to nothing but the generated ClusterRole.
const controllerUser = "system:serviceaccount:servicekey-system:servicekey-operator-controller"

// asControllerUser binds the controller-gen ClusterRole (config/rbac/controller) to
// controllerUser and returns a config that impersonates it: every test in this
// package then also proves the generated RBAC is enough.
func asControllerUser(ctx context.Context, env *testenv.Env) (*rest.Config, error) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "controller", "role.yaml"))
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, role); err != nil {
		return nil, fmt.Errorf("parse generated ClusterRole: %w", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: controllerUser}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := env.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create %T: %w", obj, err)
		}
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: controllerUser}
	return cfg, nil
}

func get(t *testing.T, namespace, name string) *v1.ServiceKey {
	t.Helper()
	sk := &v1.ServiceKey{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, sk); err != nil {
		t.Fatalf("get ServiceKey %s/%s: %v", namespace, name, err)
	}
	return sk
}

func getSecret(namespace, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, s)
	return s, err
}

// eventually is testenv.Eventually.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testenv.Eventually(t, what, cond)
}

// create makes a ServiceKey and waits until the controller reports on it.
func create(t *testing.T, sk *v1.ServiceKey) *v1.ServiceKey {
	t.Helper()
	if sk.Namespace == "" {
		sk.Namespace = ns
	}
	if err := k8s.Create(context.Background(), sk); err != nil {
		t.Fatalf("create ServiceKey: %v", err)
	}
	return waitReady(t, sk.Namespace, sk.Name, "", func(sk *v1.ServiceKey) bool {
		c := meta.FindStatusCondition(sk.Status.Conditions, v1.ConditionReady)
		return c.Reason != v1.ReasonPending // issuance finished (or blocked)
	})
}

// waitReady waits until the Ready condition has the given reason (any when "") for
// the current generation and extra holds.
// waitCondition polls until the condition typ has reason at the current generation.
func waitCondition(t *testing.T, namespace, name, typ, reason string) metav1.Condition {
	t.Helper()
	var c *metav1.Condition
	eventually(t, fmt.Sprintf("%s/%s %s reason %q", namespace, name, typ, reason), func() (bool, string) {
		sk := get(t, namespace, name)
		c = meta.FindStatusCondition(sk.Status.Conditions, typ)
		if c == nil || c.ObservedGeneration != sk.Generation {
			return false, fmt.Sprintf("condition %+v at generation %d", c, sk.Generation)
		}
		return c.Reason == reason, c.Reason + ": " + c.Message
	})
	return *c
}

func waitReady(t *testing.T, namespace, name, reason string, extra func(*v1.ServiceKey) bool) *v1.ServiceKey {
	t.Helper()
	var sk *v1.ServiceKey
	eventually(t, fmt.Sprintf("%s/%s Ready reason %q", namespace, name, reason), func() (bool, string) {
		sk = get(t, namespace, name)
		c := meta.FindStatusCondition(sk.Status.Conditions, v1.ConditionReady)
		if c == nil || c.ObservedGeneration != sk.Generation {
			return false, fmt.Sprintf("condition %+v at generation %d", c, sk.Generation)
		}
		if reason != "" && c.Reason != reason {
			return false, c.Reason + ": " + c.Message
		}
		if slices.ContainsFunc(sk.Status.Keys, func(k v1.PublicKey) bool { return k.State == v1.KeyPending }) {
			return false, "a key is still Pending: " + fmt.Sprint(keyStates(sk)) // mid-issuance, not settled
		}
		return extra(sk), fmt.Sprintf("%s, keys %+v", c.Reason, keyStates(sk))
	})
	return sk
}

var pokes atomic.Int64

// poke changes a test annotation so the controller reconciles now (after the fake
// clock moved) instead of at its real-time requeue.
func poke(t *testing.T, namespace, name string) {
	t.Helper()
	update(t, namespace, name, func(sk *v1.ServiceKey) {
		if sk.Annotations == nil {
			sk.Annotations = map[string]string{}
		}
		sk.Annotations["test.servicekey.dev/poke"] = strconv.FormatInt(pokes.Add(1), 10)
	})
}

// update changes a ServiceKey, retrying on conflicts with the controller's writes.
func update(t *testing.T, namespace, name string, change func(*v1.ServiceKey)) {
	t.Helper()
	if err := testenv.UpdateServiceKey(context.Background(), k8s, client.ObjectKey{Namespace: namespace, Name: name}, change); err != nil {
		t.Fatal(err)
	}
}

func keyStates(sk *v1.ServiceKey) []string {
	var out []string
	for _, k := range sk.Status.Keys {
		out = append(out, string(k.State)+":"+k.KeyID[:8])
	}
	return out
}

// findEvent waits for an event with reason about the ServiceKey and returns its note.
func findEvent(t *testing.T, sk *v1.ServiceKey, reason string) string {
	t.Helper()
	note := ""
	eventually(t, "event "+reason+" on "+sk.Name, func() (bool, string) {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(sk.Namespace)); err != nil {
			return false, err.Error()
		}
		for _, e := range list.Items {
			if e.Regarding.UID == sk.UID && e.Reason == reason {
				note = e.Note
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(list.Items))
	})
	return note
}

func newKey(name string) *v1.ServiceKey {
	return &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
