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
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/controllers"
	"github.com/servicekey-operator/servicekey-operator/hack/bench/procstat"
)

// burst times N creations (4 goroutines) until the watch saw all N Ready, between two
// runs of generating N keys alone with the controller's generator: the machine's
// speed drifts (steal time on a shared host), the mean of both is the bound.
func (b *bench) burst() error {
	n, workers := b.flags.n, b.flags.workers
	fmt.Printf("\n## %d ServiceKeys (2048-bit) created at once → all Ready, against key generation alone\n\n", n)
	steal0 := procstat.StealSeconds()
	before, err := timeKeygen(n, workers)
	if err != nil {
		return err
	}
	steal1 := procstat.StealSeconds()
	cpu0 := b.cpu()
	names, start, err := b.createAll(n)
	if err != nil {
		return err
	}
	times, err := b.w.waitAll(names, 20*time.Minute)
	if err != nil {
		return err
	}
	phase := times[len(times)-1].Sub(start)
	cpu1 := b.cpu()
	steal2 := procstat.StealSeconds()
	after, err := timeKeygen(n, workers)
	if err != nil {
		return err
	}
	steal3 := procstat.StealSeconds()
	fmt.Printf("| phase | wall time | keys/s | CPU stolen by the host |\n|---|---|---|---|\n")
	fmt.Printf("| %d RSA keys generated alone, before (%d goroutines) | %v | %.1f | %.1f s |\n", n, workers, before.Round(time.Millisecond), float64(n)/before.Seconds(), steal1-steal0)
	fmt.Printf("| %d ServiceKeys created → all Ready | %v | %.1f | %.1f s |\n", n, phase.Round(time.Millisecond), float64(n)/phase.Seconds(), steal2-steal1)
	fmt.Printf("| %d RSA keys generated alone, after (%d goroutines) | %v | %.1f | %.1f s |\n", n, workers, after.Round(time.Millisecond), float64(n)/after.Seconds(), steal3-steal2)
	cores := float64(runtime.NumCPU())
	avail := func(wall time.Duration, stolen float64) float64 { return cores*wall.Seconds() - stolen }
	gen := (before + after) / 2
	genAvail := (avail(before, steal1-steal0) + avail(after, steal3-steal2)) / 2
	fmt.Printf("\nratio all Ready / mean key generation: wall time %.2f; CPU seconds the machine had (cores × wall − stolen) %.2f (target ≤ 1.3)\n",
		phase.Seconds()/gen.Seconds(), avail(phase, steal2-steal1)/genAvail)
	fmt.Printf("CPU seconds in the phase: controller %.1f, token server %.1f, kube-apiserver %.1f, etcd %.1f, this bench %.1f\n",
		cpu1["controller"]-cpu0["controller"], cpu1["token"]-cpu0["token"], cpu1["kube-apiserver"]-cpu0["kube-apiserver"],
		cpu1["etcd"]-cpu0["etcd"], cpu1["self"]-cpu0["self"])
	printCurve(start, times)
	return nil
}

// cpu reads the CPU seconds used so far by each process of the system.
func (b *bench) cpu() map[string]float64 {
	out := procstat.CPUTimes()
	out["controller"] = procstat.CPUSeconds(b.s.Pid(&b.s.Controller))
	out["token"] = procstat.CPUSeconds(b.s.Pid(&b.s.TokenServer))
	return out
}

// createAll creates n ServiceKeys key-0000... from 4 goroutines and returns their
// names and when the first create was sent.
func (b *bench) createAll(n int) ([]string, time.Time, error) {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("key-%04d", i)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 4 {
				if err := b.create(context.Background(), names[i], 2048); err != nil {
					errs[g] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return names, start, errors.Join(errs...)
}

// printCurve prints the time from the first create until k ServiceKeys were Ready.
func printCurve(start time.Time, times []time.Time) {
	n := len(times)
	var ks []int
	for _, k := range []int{1, poolDepth, poolDepth + 1, n / 10, n / 4, n / 2, 3 * n / 4, n} {
		if k >= 1 && k <= n && (len(ks) == 0 || k > ks[len(ks)-1]) {
			ks = append(ks, k)
		}
	}
	fmt.Printf("\n| k Ready |")
	for _, k := range ks {
		fmt.Printf(" %d |", k)
	}
	fmt.Printf("\n|---|")
	for range ks {
		fmt.Printf("---|")
	}
	fmt.Printf("\n| time since the first create |")
	for _, k := range ks {
		fmt.Printf(" %v |", times[k-1].Sub(start).Round(time.Millisecond))
	}
	fmt.Println()
}

// timeKeygen generates n 2048-bit keys with the controller's generator on workers
// goroutines.
func timeKeygen(n, workers int) (time.Duration, error) {
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if _, err := (controllers.RSAKeys{}).New(2048, v1.PKCS1); err != nil {
					errs[w] = err
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}
