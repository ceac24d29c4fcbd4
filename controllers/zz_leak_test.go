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
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

// TestNoKeyMaterialLeaks runs last (file order): after every other test issued,
// rotated and restored keys, no private key may appear in the controllers' logs, in
// any event, or in any ServiceKey status.
func TestNoKeyMaterialLeaks(t *testing.T) {
	ctx := context.Background()
	var secrets corev1.SecretList
	if err := k8s.List(ctx, &secrets, client.HasLabels{v1.LabelServiceKey}); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) < 10 {
		t.Fatalf("only %d key Secrets; the leak check needs the other tests' keys", len(secrets.Items))
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
