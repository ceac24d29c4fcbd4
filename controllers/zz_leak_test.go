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
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// TestNoKeyMaterialLeaks: after a key is issued with a client secret, rotated and
// restored here (and, as it runs last in file order, after whatever the other tests
// did), no private key or client secret may appear in the controllers' logs, in any
// event, or in any ServiceKey status.
func TestNoKeyMaterialLeaks(t *testing.T) {
	ctx := context.Background()
	sk := newKey("leak-check")
	sk.Spec.ClientSecret = &v1.ClientSecretSpec{Enabled: true}
	sk = waitReady(t, ns, create(t, sk).Name, v1.ReasonIssued, func(*v1.ServiceKey) bool { return true })
	update(t, ns, sk.Name, func(sk *v1.ServiceKey) {
		metav1.SetMetaDataAnnotation(&sk.ObjectMeta, v1.AnnotationRotate, "leak-check")
	})
	waitReady(t, ns, sk.Name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return len(sk.Status.Keys) == 2 })
	if err := k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sk.Status.SecretName}}); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, sk.Name, v1.ReasonIssued, func(sk *v1.ServiceKey) bool { return len(sk.Status.Keys) == 3 })

	var secrets corev1.SecretList
	if err := k8s.List(ctx, &secrets, client.HasLabels{v1.LabelServiceKey}); err != nil {
		t.Fatal(err)
	}
	// A 40-character run from the middle of each private key's base64 body is
	// specific enough that any copy of the key would contain it.
	var needles []string
	for _, s := range secrets.Items {
		body := strings.ReplaceAll(string(s.Data[v1.SecretKeyPrivateKey]), "\n", "")
		if len(body) > 200 {
			needles = append(needles, body[100:140])
		}
		if cs := string(s.Data[v1.SecretKeyClientSecret]); cs != "" {
			needles = append(needles, cs)
		}
	}
	needles = append(needles, "PRIVATE KEY")

	var events eventsv1.EventList
	if err := k8s.List(ctx, &events); err != nil {
		t.Fatal(err)
	}
	var keys v1.ServiceKeyList
	if err := k8s.List(ctx, &keys); err != nil {
		t.Fatal(err)
	}
	haystacks := map[string]string{"controller logs": logs.String()}
	for _, e := range events.Items {
		haystacks["event "+e.Name] = e.Note
	}
	for _, k := range keys.Items {
		haystacks["status of "+k.Name] = statusText(k.Status)
	}
	if !strings.Contains(logs.String(), "Reconcile") && len(logs.String()) == 0 {
		t.Fatal("no controller logs were captured; the check would prove nothing")
	}
	for where, text := range haystacks {
		for _, n := range needles {
			if strings.Contains(text, n) {
				t.Errorf("private key material found in %s", where)
			}
		}
	}
}

func statusText(st v1.ServiceKeyStatus) string {
	var b strings.Builder
	for _, c := range st.Conditions {
		b.WriteString(c.Message)
	}
	for _, k := range st.Keys {
		b.WriteString(k.PublicKey)
	}
	return b.String()
}
