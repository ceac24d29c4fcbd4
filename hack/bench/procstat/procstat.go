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

// Package procstat reads CPU accounting from /proc (Linux) for the benchmarks: the
// CPU time of processes, and the time the hypervisor stole from this machine.
package procstat

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CPUTimes reads user+system CPU seconds of this process and of the kube-apiserver
// and etcd processes from /proc (Linux), to show where the controller's time goes.
func CPUTimes() map[string]float64 {
	out := map[string]float64{"self": procCPU("self")}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil {
			continue
		}
		if name := strings.TrimSpace(string(comm)); name == "kube-apiserver" || name == "etcd" {
			out[name] += procCPU(filepath.Base(d))
		}
	}
	return out
}

func procCPU(pid string) float64 {
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are fields 14, 15.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

// StealSeconds is the CPU time the hypervisor took from this machine so far (the
// steal column of /proc/stat), summed over CPUs.
func StealSeconds() float64 {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	fields := strings.Fields(strings.SplitN(string(stat), "\n", 2)[0])
	if len(fields) < 9 {
		return 0
	}
	steal, _ := strconv.ParseFloat(fields[8], 64)
	return steal / 100
}

// RSSBytes is the resident set size of a process (VmRSS in /proc/PID/status), 0 when
// it cannot be read.
func RSSBytes(pid int) int64 {
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// CPUSeconds is the user+system CPU time of a process so far.
func CPUSeconds(pid int) float64 { return procCPU(strconv.Itoa(pid)) }
