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

package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

// cleanStale undoes what an earlier run left when it died before its teardown (a
// test binary killed at a CI timeout takes its components with it, but not the pods'
// processes, their mounts, the bridge, the iptables rules). Only directories whose
// owner process is gone count, and only what is this cluster's: processes in the
// kubelet's cgroup root, mounts under those directories, the bridge, the cgroup root,
// and the iptables rules and sysctls that differ from the snapshot the run saved in
// its directory. Other software's pods and network namespaces are not touched.
func cleanStale(o Options) error {
	var stale []*Cluster
	all, _ := filepath.Glob(filepath.Join(os.TempDir(), "skc-*"))
	for _, d := range all {
		owner, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // not a cluster directory (or the logs a failed run kept)
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(owner))); err == nil && alive(pid) {
			return fmt.Errorf("another test cluster is running (process %d, %s): one at a time", pid, d)
		}
		c := &Cluster{opts: o, Dir: d}
		if host, err := os.ReadFile(filepath.Join(d, hostFile)); err == nil {
			_ = json.Unmarshal(host, &c.before) // without it, rules and sysctls stay
		}
		stale = append(stale, c)
	}
	_, bridgeErr := net.InterfaceByName(bridgeName)
	if len(stale) == 0 && bridgeErr != nil {
		return nil
	}
	o.Logf("[cluster] cleaning up after %d earlier run(s) that were not torn down", len(stale))
	for _, pid := range staleProcs(o) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// A cgroup cannot be removed while a killed process is still in it.
	if err := testenv.Poll("the earlier run's processes to exit", timeoutShort, func() (bool, string) {
		left := staleProcs(o)
		return len(left) == 0, fmt.Sprint(left)
	}); err != nil {
		return err
	}
	errs := []error{(&Cluster{opts: o}).deleteBridge(), removeCgroups(cgroupRoot)}
	for _, c := range stale {
		errs = append(errs, c.unmountAll(), c.removeAddedIptables(), c.restoreHost())
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
		}
	}
	return errors.Join(errs...)
}

// staleProcs lists the processes of a cluster: in the kubelet's cgroup root (the pods')
// or running one of the node's binaries (shims, the kubelet, containerd).
func staleProcs(o Options) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || zombie(pid) {
			continue
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if inCgroupRoot(cg) || strings.HasPrefix(exe, o.Node+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// zombie: the process has exited and waits for its parent to reap it.
func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // gone
	}
	// pid (comm) state ...: comm may hold spaces and parentheses; state follows the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z'
}

// alive: a process with this PID exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
