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
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	"github.com/servicekey-operator/servicekey-operator/controllers"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

func TestSigningKeyLifecycle(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	m := &controllers.SigningKeyManager{
		Client: reconciler.Client, Reader: reconciler.APIReader,
		Secret: types.NamespacedName{Namespace: ns, Name: "token-signing"},
		Policy: controllers.SigningPolicy{Algorithm: "ES256", Every: 24 * time.Hour, MaxTokenTTL: time.Hour},
		Clock:  clk, Log: logr.Discard(),
	}
	read := func() *corev1.Secret {
		s, err := getSecret(ns, "token-signing")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if wait, err := m.Reconcile(ctx); err != nil || wait != 24*time.Hour {
		t.Fatalf("create: %v, requeue %v", err, wait)
	}
	s := read()
	if s.Type != controllers.SigningKeyType || len(s.Data) != 2 {
		t.Fatalf("type %s, %d keys", s.Type, len(s.Data))
	}
	for _, k := range []string{keyutil.SigningCurrent, keyutil.SigningNext} {
		block, _ := pem.Decode(s.Data[k])
		if block == nil {
			t.Fatalf("%s is not PEM", k)
		}
		if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	first := s.Data[keyutil.SigningCurrent]
	next := s.Data[keyutil.SigningNext]

	// Nothing due: no write.
	if _, err := m.Reconcile(ctx); err != nil || read().ResourceVersion != s.ResourceVersion {
		t.Fatalf("steady state wrote: %v", err)
	}
	// Rotation: next signs, current becomes previous.
	clk.Step(24 * time.Hour)
	if _, err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	s = read()
	if string(s.Data[keyutil.SigningCurrent]) != string(next) || string(s.Data[keyutil.SigningPrevious]) != string(first) || len(s.Data[keyutil.SigningNext]) == 0 {
		t.Fatal("rotation did not move next to current and current to previous")
	}
	// Tokens of the previous key have expired: it leaves.
	clk.Step(time.Hour + time.Minute)
	if _, err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := read().Data[keyutil.SigningPrevious]; ok {
		t.Error("previous key still published after the longest token expired")
	}
}

func TestSigningKeyRefusesForeignSecret(t *testing.T) {
	ctx := context.Background()
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "not-ours", Namespace: ns}, StringData: map[string]string{"a": "b"}}
	if err := k8s.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	m := &controllers.SigningKeyManager{Client: reconciler.Client, Reader: reconciler.APIReader,
		Secret: types.NamespacedName{Namespace: ns, Name: "not-ours"}, Policy: controllers.SigningPolicy{Every: time.Hour, MaxTokenTTL: time.Minute},
		Clock: clocktesting.NewFakeClock(time.Now()), Log: logr.Discard()}
	if _, err := m.Reconcile(ctx); err == nil {
		t.Fatal("took over a Secret of another type")
	}
	if s, _ := getSecret(ns, "not-ours"); len(s.Data) != 1 {
		t.Error("the foreign Secret was changed")
	}
}

// TestSigningKeyWatchReplacesAtOnce: deleting the signing-key Secret (the runbook for a
// compromised key), or emptying it, brings fresh keys through the watch alone. The
// recheck is an hour and the rotation a day, so no timer can be what acts; the poll
// deadline only bounds a hung test.
func TestSigningKeyWatchReplacesAtOnce(t *testing.T) {
	ctx := context.Background()
	name := types.NamespacedName{Namespace: ns, Name: "token-signing-watched"}
	startSigningKeyManager(t, name)
	cases := []struct {
		name   string
		change func(s *corev1.Secret) error
	}{
		{"deleted", func(s *corev1.Secret) error { return k8s.Delete(ctx, s) }},
		{"emptied", func(s *corev1.Secret) error { s.Data = nil; return k8s.Update(ctx, s) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old := waitSigningSecret(t, name, nil)
			if err := tc.change(old); err != nil {
				t.Fatal(err)
			}
			waitSigningSecret(t, name, old.Data[keyutil.SigningCurrent])
		})
	}
}

// startSigningKeyManager runs a SigningKeyManager for name in a manager of its own,
// as the controller user (so the generated RBAC is proven enough for the watch),
// until the test ends.
func startSigningKeyManager(t *testing.T, name types.NamespacedName) {
	t.Helper()
	cfg := rest.CopyConfig(adminConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: controllerUser}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: testScheme, Cache: controllers.CacheOptions(),
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := &controllers.SigningKeyManager{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Secret: name,
		Policy:  controllers.SigningPolicy{Algorithm: "ES256", Every: 24 * time.Hour, MaxTokenTTL: time.Hour},
		Clock:   clocktesting.NewFakeClock(time.Now()),
		Recheck: time.Hour,
		Log:     ctrl.Log.WithName("signing-keys"),
	}
	if err := m.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = mgr.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitSigningSecret polls until the Secret has a current key other than notCurrent
// (any current key when nil) and returns it.
func waitSigningSecret(t *testing.T, name types.NamespacedName, notCurrent []byte) *corev1.Secret {
	t.Helper()
	var s *corev1.Secret
	err := testenv.Poll("signing-key Secret with new keys", 15*time.Second, func() (bool, string) {
		var err error
		if s, err = getSecret(name.Namespace, name.Name); err != nil {
			return false, err.Error()
		}
		cur := s.Data[keyutil.SigningCurrent]
		if len(cur) == 0 || bytes.Equal(cur, notCurrent) {
			return false, "no new current key"
		}
		return len(s.Data[keyutil.SigningNext]) > 0, "no next key"
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
