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
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/servicekey-operator/servicekey-operator/hack/bench/procstat"
	"github.com/servicekey-operator/servicekey-operator/hack/stack"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// memory is a component's live heap right after a forced collection, and its RSS.
type memory struct{ heap, rss int64 }

// measure forces a collection in the component (pprof's heap profile with gc=1) and
// reads HeapAlloc from the profile's runtime.MemStats, and the process's RSS.
func (b *bench) measure(c *stack.Component, pprofAddr string) (memory, error) {
	body, err := get("http://" + pprofAddr + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return memory{}, fmt.Errorf("heap profile of %s: %w", c.Name, err)
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "# HeapAlloc = "); ok {
			heap, err := strconv.ParseInt(v, 10, 64)
			return memory{heap: heap, rss: procstat.RSSBytes(b.s.Pid(c))}, err
		}
	}
	return memory{}, fmt.Errorf("no HeapAlloc in the heap profile of %s", c.Name)
}

// memoryAtN waits until the token server's index holds every ServiceKey created so
// far and reports both components' heap and RSS per ServiceKey against the start.
func (b *bench) memoryAtN() error {
	n := int(b.created.Load())
	err := testenv.Poll("the token server indexes every ServiceKey", 5*time.Minute, func() (bool, string) {
		v, err := testenv.MetricValue(b.tokenMetrics, "servicekey_token_keys_indexed")
		if err != nil {
			return false, err.Error()
		}
		return int(v) >= n, fmt.Sprintf("%v of %d indexed", v, n)
	})
	if err != nil {
		return err
	}
	ctrl, err := b.measure(&b.s.Controller, b.ctrlPprof)
	if err != nil {
		return err
	}
	token, err := b.measure(&b.s.TokenServer, b.tokenPprof)
	if err != nil {
		return err
	}
	fmt.Printf("\n## Memory with %d ServiceKeys (heap right after a forced GC; RSS)\n\n", n)
	fmt.Printf("| component | heap at 0 | heap at %d | heap per ServiceKey | RSS at 0 | RSS at %d | RSS per ServiceKey |\n|---|---|---|---|---|---|---|\n", n, n)
	for _, row := range []struct {
		name       string
		base, at   memory
		heapTarget string
	}{{"controller", b.baseCtrl, ctrl, "8 KiB"}, {"token server", b.baseToken, token, "3 KiB"}} {
		fmt.Printf("| %s | %s | %s | %.1f KiB (target ≤ %s) | %s | %s | %.1f KiB |\n", row.name,
			mib(row.base.heap), mib(row.at.heap), kibPer(row.at.heap-row.base.heap, n), row.heapTarget,
			mib(row.base.rss), mib(row.at.rss), kibPer(row.at.rss-row.base.rss, n))
	}
	return nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func kibPer(b int64, n int) float64 { return float64(b) / 1024 / float64(n) }

// scrape times five scrapes of each component's /metrics and reports the median.
func (b *bench) scrape() error {
	fmt.Printf("\n## Metrics scrape with %d ServiceKeys (median of 5 GETs)\n\n| component | time | size |\n|---|---|---|\n", b.created.Load())
	for _, c := range []struct{ name, url string }{{"controller", b.ctrlMetrics}, {"token server", b.tokenMetrics}} {
		var times []time.Duration
		size := 0
		for range 5 {
			start := time.Now()
			body, err := get(c.url)
			if err != nil {
				return err
			}
			times = append(times, time.Since(start))
			size = len(body)
		}
		slices.Sort(times)
		fmt.Printf("| %s | %v | %.1f KiB |\n", c.name, times[2].Round(100*time.Microsecond), float64(size)/1024)
	}
	return nil
}

// startup restarts the token server (SIGTERM, as a rollout does) and times from the
// new process's start until /readyz answers 200: its caches have synced and its
// index holds every ServiceKey.
func (b *bench) startup() error {
	var runs []time.Duration
	for range 3 {
		err := b.s.Restart(context.Background(), &b.s.TokenServer, syscall.SIGTERM, b.s.TokenServerReadyURL())
		if err != nil {
			return fmt.Errorf("restart the token server: %w", err)
		}
		runs = append(runs, time.Since(b.s.Started(&b.s.TokenServer)))
	}
	slices.Sort(runs)
	fmt.Printf("\n## Token-server start-up with %d ServiceKeys (process start → /readyz 200; 3 restarts)\n\nmedian %v, min %v, max %v\n",
		b.created.Load(), runs[1].Round(time.Millisecond), runs[0].Round(time.Millisecond), runs[2].Round(time.Millisecond))
	return nil
}

// get fetches url and returns the body of a 200 answer.
func get(url string) (string, error) {
	code, body := testenv.HTTPGet(url)
	if code != http.StatusOK {
		return "", fmt.Errorf("GET %s: %d %s", url, code, body)
	}
	return body, nil
}
