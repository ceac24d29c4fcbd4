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

package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
)

func (d demo) printEventsAndMetrics(sk *v1.ServiceKey) error {
	ctx := context.Background()
	step("Events on the ServiceKey (kubectl describe sk billing)")
	var list eventsv1.EventList
	if err := d.c.List(ctx, &list, client.InNamespace(sk.Namespace)); err != nil {
		return err
	}
	sort.Slice(list.Items, func(i, j int) bool {
		return list.Items[i].CreationTimestamp.Before(&list.Items[j].CreationTimestamp)
	})
	for _, e := range list.Items {
		if e.Regarding.UID == sk.UID {
			fmt.Printf("  %-8s %-15s %s\n", e.Type, e.Reason, e.Note)
		}
	}
	step("Metrics (curl http://" + d.metrics + "/metrics | grep servicekey_)")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.metrics+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("scrape metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "servicekey_") {
			fmt.Println("  " + line)
		}
	}
	return sc.Err()
}

// step prints a numbered heading; say prints a line under it.
var stepNo int

func step(s string) {
	stepNo++
	fmt.Printf("\n==> %d. %s\n", stepNo, s)
}

func say(format string, args ...any) {
	fmt.Printf("    "+format+"\n", args...)
}
