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

package controllers

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// cachedFixture is a Ready ServiceKey whose Secret is as the controller writes it,
// client secret included.
func cachedFixture(t *testing.T) fixture {
	t.Helper()
	f := newFixture(t)
	f.secret.Type = corev1.SecretType(v1.SecretType)
	f.secret.OwnerReferences = []metav1.OwnerReference{{UID: "uid-1", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
	f.secret.Labels = map[string]string{v1.LabelServiceKey: "app"}
	f.secret.Data[v1.SecretKeyClientSecret] = []byte("the-client-secret-value")
	f.key.Spec.ClientSecret = &v1.ClientSecretSpec{Enabled: true}
	f.key.Status.ClientSecretHash = keyutil.HashClientSecret("the-client-secret-value")
	return f
}

func summarized(s *corev1.Secret) *corev1.Secret {
	c := s.DeepCopy()
	c.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "someone"}}
	out, _ := SummarizeSecret(c)
	return out.(*corev1.Secret)
}

// The cache's copy of a key Secret holds neither the private key nor the client
// secret, in any entry, and summarizing twice changes nothing.
func TestSummaryHoldsNoSecret(t *testing.T) {
	f := cachedFixture(t)
	f.secret.Annotations[lastApplied] = `{"data":{"private-key.pem":"` + string(f.secret.Data[v1.SecretKeyPrivateKey]) + `"}}`
	s := summarized(f.secret)
	if s.ManagedFields != nil {
		t.Error("managedFields kept")
	}
	if strings.Contains(s.Annotations[lastApplied], "PRIVATE KEY") || f.secret.Annotations[lastApplied] == s.Annotations[lastApplied] {
		t.Error("kubectl's last-applied-configuration kept as is")
	}
	for name, value := range s.Data {
		pem := f.secret.Data[v1.SecretKeyPrivateKey]
		for _, secret := range [][]byte{pem[100:140], []byte("the-client-secret-value"), []byte("PRIVATE KEY")} {
			if bytes.Contains(value, secret) {
				t.Errorf("summarized entry %s holds secret bytes", name)
			}
		}
	}
	again, _ := SummarizeSecret(s.DeepCopy())
	if !maps.EqualFunc(again.(*corev1.Secret).Data, s.Data, bytes.Equal) || !maps.Equal(again.(*corev1.Secret).Annotations, s.Annotations) {
		t.Error("summarizing a summary changed it")
	}
	live, cached := readSecret(f.secret), readSecret(s)
	if live.keyID == "" || live.keyID != cached.keyID || live.bits != 2048 || cached.bits != 2048 || cached.encoding != v1.PKCS1 ||
		live.pemDigest != cached.pemDigest || live.clientSecretHash != f.key.Status.ClientSecretHash || cached.clientSecretHash != live.clientSecretHash {
		t.Errorf("facts differ: live %+v, cached %+v", live.keyID, cached.keyID)
	}
	if cached.pem != nil || cached.clientSecret != "" {
		t.Error("the summary yields the private key or the client secret")
	}
}

// A summarized Secret matches what the controller would write exactly when the full
// Secret does; a change to any entry, even key.json's formatting alone, is seen.
func TestSummaryMatchesLikeTheSecret(t *testing.T) {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, _ := keyutil.EncodePrivateKey(other, v1.PKCS1)
	cases := map[string]struct {
		change func(data map[string][]byte)
		match  bool
		// rekeys: the change is a reason for a new key or client secret, not a rewrite.
		rekeys bool
	}{
		"as written": {func(map[string][]byte) {}, true, false},
		"key.json reformatted": {func(d map[string][]byte) {
			d[v1.SecretKeyJSON] = bytes.ReplaceAll(d[v1.SecretKeyJSON], []byte("  "), []byte("\t"))
		}, false, false},
		"another private key":         {func(d map[string][]byte) { d[v1.SecretKeyPrivateKey] = otherPEM }, false, true},
		"key.json with another key":   {func(d map[string][]byte) { d[v1.SecretKeyJSON] = swapKey(t, d[v1.SecretKeyJSON], otherPEM) }, false, false},
		"client secret changed":       {func(d map[string][]byte) { d[v1.SecretKeyClientSecret] = []byte("another") }, false, true},
		"token-uri changed":           {func(d map[string][]byte) { d[v1.SecretKeyTokenURI] = []byte("https://elsewhere") }, false, false},
		"an entry added":              {func(d map[string][]byte) { d["extra"] = []byte("x") }, false, false},
		"the client secret file gone": {func(d map[string][]byte) { delete(d, v1.SecretKeyClientSecret) }, false, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := cachedFixture(t)
			tc.change(f.secret.Data)
			for _, observed := range []*corev1.Secret{f.secret, summarized(f.secret)} {
				o := f.at(t0)
				o.Secret = observed
				d := Decide(o)
				if d.Generate() != tc.rekeys {
					t.Fatalf("Generate = %v, want %v", d.Generate(), tc.rekeys)
				}
				if tc.rekeys {
					continue
				}
				out, err := Build(o, d, Config{})
				if err != nil {
					t.Fatal(err)
				}
				if got := out.Secret.matches(observed, "uid-1"); got != tc.match {
					t.Errorf("matches = %v on the %s Secret, want %v", got, map[bool]string{true: "full", false: "summarized"}[fullData(observed.Data)], tc.match)
				}
				if fullData(observed.Data) == (out.Secret.Data == nil) {
					t.Errorf("Data known = %v, want it known exactly from a live read", out.Secret.Data != nil)
				}
			}
		})
	}
}

func swapKey(t *testing.T, keyJSON, pem []byte) []byte {
	t.Helper()
	kf, err := keyutil.ParseKeyFile(keyJSON)
	if err != nil {
		t.Fatal(err)
	}
	kf.PrivateKey = string(pem)
	out, err := kf.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// An unreadable private key is a reason for a new key pair; the client secret, which
// still matches its published hash, is kept.
func TestUnreadableKeyKeepsClientSecret(t *testing.T) {
	f := cachedFixture(t)
	f.secret.Data[v1.SecretKeyPrivateKey] = []byte("not a key")
	for _, observed := range []*corev1.Secret{f.secret, summarized(f.secret)} {
		o := f.at(t0)
		o.Secret = observed
		d := Decide(o)
		if d.Rekey != CauseSecretMismatch || d.NewClientSecret {
			t.Errorf("full data %v: Rekey %q, NewClientSecret %v; want SecretMismatch and the client secret kept",
				fullData(observed.Data), d.Rekey, d.NewClientSecret)
		}
	}
}
