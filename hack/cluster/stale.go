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
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// cleanStale removes what an earlier run left when it died before its teardown (a
// test binary killed at a CI timeout takes its components with it, but not the pods'
// processes, their mounts and the bridge): pod processes (in the kubelet's cgroups)
// and shims are killed, mounts under the old directories and pod network namespaces
// detached, the bridge, kube-proxy's rules and the old directories removed.
func cleanStale(o Options) error {
	var dirs []string
	all, _ := filepath.Glob(filepath.Join(os.TempDir(), "skc-*"))
	for _, d := range all {
		if !strings.HasSuffix(d, "-logs") { // a failed run's logs, kept on purpose
			dirs = append(dirs, d)
		}
	}
	_, bridgeErr := net.InterfaceByName(bridgeName)
	if len(dirs) == 0 && bridgeErr != nil {
		return nil
	}
	o.Logf("[cluster] cleaning up after an earlier run that was not torn down: %v", dirs)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid == os.Getpid() {
			continue
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if strings.Contains(string(cg), "/kubepods") || strings.HasPrefix(exe, o.Node+"/") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	stale := &Cluster{opts: o}
	var errs []error
	for _, d := range dirs {
		stale.Dir = d
		errs = append(errs, stale.unmountAll())
	}
	stale.Dir = ""
	errs = append(errs, stale.unmountAll(), stale.deleteBridge(), removeCgroups("kubepods"))
	_ = exec.Command(filepath.Join(o.Node, "kube-proxy"), "--cleanup").Run() //nolint:gosec // our binary
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
