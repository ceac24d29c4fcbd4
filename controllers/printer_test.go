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
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// TestPrinterColumns asks the API server for the table `kubectl get sk` shows and
// checks that every column is filled from the status.
func TestPrinterColumns(t *testing.T) {
	sk := newKey("printer")
	at := metav1.NewTime(fakeClock.Now().Add(48 * time.Hour))
	sk.Spec.ExpiresAt = &at
	sk = create(t, sk)

	httpClient, err := rest.HTTPClientFor(adminConfig)
	if err != nil {
		t.Fatal(err)
	}
	url := strings.TrimSuffix(adminConfig.Host, "/") + "/apis/auth.servicekey.dev/v1alpha1/namespaces/" + ns + "/servicekeys/printer"
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil || len(table.Rows) != 1 {
		t.Fatalf("table: %v, %s", err, body)
	}
	want := map[string]any{
		"Name":    "printer",
		"Ready":   "True",
		"Subject": "system:servicekey:" + ns + ":printer",
		"Key ID":  activeKey(t, sk).KeyID,
		"Expires": at.UTC().Format(time.RFC3339),
	}
	got := map[string]any{}
	for i, col := range table.ColumnDefinitions {
		got[col.Name] = table.Rows[0].Cells[i]
	}
	for col, w := range want {
		if got[col] != w {
			t.Errorf("column %s = %v, want %v", col, got[col], w)
		}
	}
	if _, ok := got["Age"]; !ok {
		t.Errorf("no Age column: %v", got)
	}
}
