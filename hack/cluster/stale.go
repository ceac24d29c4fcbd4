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
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// cleanStale removes what an earlier run left when it died before its teardown (a
// test binary killed at a CI timeout takes its components with it, but not the pods'
// processes, their mounts and the bridge). Only directories whose owner process is
// gone count, and only what is this cluster's: processes in the kubelet's cgroup root,
// mounts under those directories, the bridge, the cgroup root. Other software's pods,
// network namespaces and iptables rules are not touched; rules an earlier run left
// stay (its snapshot died with it).
func cleanStale(o Options) error {
	var dirs []string
	all, _ := filepath.Glob(filepath.Join(os.TempDir(), "skc-*"))
	for _, d := range all {
		owner, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // not a cluster directory (or the logs a failed run kept)
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(owner))); err == nil && alive(pid) {
			return fmt.Errorf("another test cluster is running (process %d, %s): one at a time", pid, d)
		}
		dirs = append(dirs, d)
	}
	_, bridgeErr := net.InterfaceByName(bridgeName)
	if len(dirs) == 0 && bridgeErr != nil {
		return nil
	}
	o.Logf("[cluster] cleaning up after an earlier run that was not torn down: %v", dirs)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if inCgroupRoot(cg) || strings.HasPrefix(exe, o.Node+"/") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	stale := &Cluster{opts: o}
	var errs []error
	for _, d := range dirs {
		stale.Dir = d
		errs = append(errs, stale.unmountAll())
	}
	errs = append(errs, stale.deleteBridge(), removeCgroups(cgroupRoot))
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// alive: a process with this PID exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
