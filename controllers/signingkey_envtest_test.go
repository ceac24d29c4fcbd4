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
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	"github.com/servicekey-operator/servicekey-operator/controllers"
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
