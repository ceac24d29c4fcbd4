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
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

const timeoutShort = time.Minute

// hostState is what Stop must leave as it was: network devices, iptables chains and
// rules, sysctls, and the host paths the node writes outside Dir.
type hostState struct {
	links    []string
	iptables []string
	// saved is iptables-save and ip6tables-save output, restored by Stop.
	saved   map[string][]byte
	sysctls map[string]string
	existed map[string]bool
}

// hostPaths are written by the node outside Dir whatever its configuration: shim
// sockets, network namespaces, the CNI result cache, the kubelet's log symlinks.
var hostPaths = []string{"/run/containerd", "/run/netns", "/var/run/netns", "/var/lib/cni", "/var/log/containers"}

func snapshotHost() (hostState, error) {
	s := hostState{sysctls: map[string]string{}, existed: map[string]bool{}}
	var err error
	if s.links, err = linkNames(); err != nil {
		return s, err
	}
	if s.iptables, err = iptablesLines(); err != nil {
		return s, err
	}
	s.saved = map[string][]byte{}
	for _, family := range []string{"iptables", "ip6tables"} {
		if s.saved[family], err = exec.Command(family + "-save").Output(); err != nil { //nolint:gosec // fixed commands
			return s, fmt.Errorf("%s-save: %w", family, err)
		}
	}
	for key := range sysctls {
		v, err := os.ReadFile("/proc/sys/" + key)
		if err != nil {
			return s, fmt.Errorf("read sysctl %s: %w", key, err)
		}
		s.sysctls[key] = strings.TrimSpace(string(v))
	}
	for _, p := range hostPaths {
		_, err := os.Lstat(p)
		s.existed[p] = err == nil
	}
	return s, nil
}

func linkNames() ([]string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	names := make([]string, 0, len(ifaces))
	for _, i := range ifaces {
		names = append(names, i.Name)
	}
	sort.Strings(names)
	return names, nil
}

// iptablesLines lists every chain and rule of the IPv4 and IPv6 tables (without
// counters), so two listings compare equal when nothing was added.
func iptablesLines() ([]string, error) {
	var lines []string
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(cmd).Output() //nolint:gosec // fixed commands
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cmd, err)
		}
		table := ""
		for _, l := range strings.Split(string(out), "\n") {
			switch {
			case strings.HasPrefix(l, "*"):
				table = l[1:]
			case strings.HasPrefix(l, ":"):
				lines = append(lines, cmd+" "+table+" "+strings.Fields(l)[0])
			case strings.HasPrefix(l, "-A"):
				lines = append(lines, cmd+" "+table+" "+l)
			}
		}
	}
	sort.Strings(lines)
	return lines, nil
}

// Stop tears the cluster down: the control plane stops first so nothing recreates a
// pod, the kubelet next, then every pod sandbox is stopped and removed through the CRI
// (which runs the CNI plugins' DEL), then containerd, kube-proxy's rules, the bridge,
// leftover mounts and cgroups, the sysctls, and Dir. It returns an error naming
// whatever is still there afterwards.
func (c *Cluster) Stop(ctx context.Context) error {
	var errs []error
	stop := func(names ...string) { // in this order
		for _, name := range names {
			for _, p := range c.procs {
				if p.name == name {
					if err := p.stop(30 * time.Second); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
	}
	stop("kube-controller-manager", "kube-scheduler", "kubelet")
	if c.hasProc("containerd") {
		if err := c.removeSandboxes(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	stop("kube-proxy", "containerd")
	if c.hasProc("kube-proxy") {
		if out, err := exec.Command(filepath.Join(c.opts.Node, "kube-proxy"), "--cleanup").CombinedOutput(); err != nil { //nolint:gosec // our binary
			errs = append(errs, fmt.Errorf("kube-proxy --cleanup: %w: %s", err, out))
		}
	}
	errs = append(errs, c.killStrays(), c.deleteBridge(), c.unmountAll(), removeCgroups("kubepods"), c.restoreIptables())
	stop("kube-apiserver", "etcd")
	errs = append(errs, c.restoreHost())
	errs = append(errs, c.leftovers())
	if c.KeepLogs && c.Dir != "" {
		if err := os.Rename(c.path("logs"), c.Dir+"-logs"); err == nil {
			c.logf("component logs kept in %s-logs", c.Dir)
		}
	}
	if c.Dir != "" && len(c.mounts()) == 0 {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.logf("torn down: no processes, mounts, network devices or iptables rules left")
	return nil
}

// restoreIptables puts back the tables as they were before Start (the kubelet adds
// KUBE-FIREWALL and canary chains that kube-proxy --cleanup leaves), and empties the
// tables that did not exist then.
func (c *Cluster) restoreIptables() error {
	var errs []error
	for family, saved := range c.before.saved {
		restore := exec.Command(family + "-restore") //nolint:gosec // fixed commands
		restore.Stdin = strings.NewReader(string(saved))
		if out, err := restore.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s-restore: %w: %s", family, err, out))
		}
		for _, table := range []string{"filter", "nat", "mangle", "raw", "security"} {
			if strings.Contains(string(saved), "*"+table+"\n") {
				continue
			}
			_ = exec.Command(family, "-t", table, "-F").Run() //nolint:gosec // fixed commands
			_ = exec.Command(family, "-t", table, "-X").Run() //nolint:gosec // fixed commands
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) hasProc(name string) bool {
	return slices.ContainsFunc(c.procs, func(p *proc) bool { return p.name == name })
}

// killStrays kills processes started from the node's binaries or running in Dir that
// outlived containerd (a shim whose container was not removed), and reports them.
func (c *Cluster) killStrays() error {
	pids := c.strays()
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if len(pids) > 0 {
		return fmt.Errorf("processes outlived containerd and were killed: %v", pids)
	}
	return nil
}

// strays lists processes whose executable is one of the node's binaries or whose
// command line names Dir (containers' processes run from their rootfs under Dir).
func (c *Cluster) strays() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid == os.Getpid() || c.ours(pid) {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if (c.opts.Node != "" && strings.HasPrefix(exe, c.opts.Node+"/")) ||
			(c.Dir != "" && (strings.Contains(string(cmdline), c.Dir) || strings.HasPrefix(exe, c.Dir+"/"))) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ours: a component Stop has yet to stop.
func (c *Cluster) ours(pid int) bool {
	return slices.ContainsFunc(c.procs, func(p *proc) bool {
		done, _ := p.exited()
		return !done && p.cmd.Process.Pid == pid
	})
}

func (c *Cluster) deleteBridge() error {
	if _, err := net.InterfaceByName(bridgeName); err != nil {
		return nil
	}
	if out, err := exec.Command("ip", "link", "delete", bridgeName).CombinedOutput(); err != nil {
		return fmt.Errorf("delete bridge %s: %w: %s", bridgeName, err, out)
	}
	return nil
}

// unmountAll detaches every mount under Dir and every network namespace the node
// created, deepest first (a kubelet stopped before its pods leaves their volumes).
func (c *Cluster) unmountAll() error {
	var errs []error
	for _, m := range c.mounts() {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// mounts lists the mount points under Dir and the netns mounts of pods, deepest first.
func (c *Cluster) mounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer func() { _ = f.Close() }()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		if (c.Dir != "" && strings.HasPrefix(mp, c.Dir+"/")) || strings.Contains(mp, "/netns/cni-") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// removeCgroups removes the kubelet's cgroup tree (name) from every cgroup hierarchy,
// children first.
func removeCgroups(name string) error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	if _, err := os.Stat("/sys/fs/cgroup/" + name); err == nil {
		roots = append(roots, "/sys/fs/cgroup/"+name)
	}
	var errs []error
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) restoreHost() error {
	var errs []error
	for key, v := range c.before.sysctls {
		if err := os.WriteFile("/proc/sys/"+key, []byte(v), 0o644); err != nil { //nolint:gosec // procfs
			errs = append(errs, fmt.Errorf("restore sysctl %s: %w", key, err))
		}
	}
	for _, p := range hostPaths {
		if c.before.existed != nil && !c.before.existed[p] {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
			}
		}
	}
	if c.before.existed["/var/log/containers"] {
		// The kubelet's symlinks to this cluster's logs.
		links, _ := filepath.Glob("/var/log/containers/*")
		for _, l := range links {
			if target, err := os.Readlink(l); err == nil && c.Dir != "" && strings.HasPrefix(target, c.Dir) {
				_ = os.Remove(l)
			}
		}
	}
	return errors.Join(errs...)
}

// leftovers compares the host with the snapshot taken before Start.
func (c *Cluster) leftovers() error {
	var left []string
	if links, err := linkNames(); err == nil && c.before.links != nil {
		for _, l := range links {
			if !slices.Contains(c.before.links, l) {
				left = append(left, "network device "+l)
			}
		}
	}
	if lines, err := iptablesLines(); err == nil && c.before.iptables != nil {
		for _, l := range lines {
			if !slices.Contains(c.before.iptables, l) {
				left = append(left, "iptables "+l)
			}
		}
	}
	for _, m := range c.mounts() {
		left = append(left, "mount "+m)
	}
	for _, pid := range c.strays() {
		left = append(left, fmt.Sprintf("process %d", pid))
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind: %s", strings.Join(left, "; "))
	}
	return nil
}
