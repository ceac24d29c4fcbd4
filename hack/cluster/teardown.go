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

// ownerFile, in Dir, holds the PID of the process that started the cluster.
const ownerFile = "owner"

// inCgroupRoot: a /proc/<pid>/cgroup content naming the kubelet's cgroup root.
func inCgroupRoot(cgroups []byte) bool { return strings.Contains(string(cgroups), ":/"+cgroupRoot+"/") }

// hostState is what Stop must leave as it was: network devices, iptables chains and
// rules, sysctls, and the host paths the node writes outside Dir.
type hostState struct {
	Links    []string          `json:"links"`
	Iptables []string          `json:"iptables"`
	Sysctls  map[string]string `json:"sysctls"`
	Existed  map[string]bool   `json:"existed"`
}

// hostFile, in Dir, holds the hostState taken before Start, so that a later run can
// undo what a run killed before its teardown left (cleanStale).
const hostFile = "host.json"

// hostPaths are written by the node outside Dir whatever its configuration: shim
// sockets, network namespaces, the CNI result cache, the kubelet's log symlinks.
var hostPaths = []string{"/run/containerd", "/run/netns", "/var/run/netns", "/var/lib/cni", "/var/log/containers"}

func snapshotHost() (hostState, error) {
	s := hostState{Sysctls: map[string]string{}, Existed: map[string]bool{}}
	var err error
	if s.Links, err = linkNames(); err != nil {
		return s, err
	}
	if s.Iptables, err = iptablesLines(); err != nil {
		return s, err
	}
	for key := range sysctls {
		v, err := os.ReadFile("/proc/sys/" + key)
		if err != nil {
			return s, fmt.Errorf("read sysctl %s: %w", key, err)
		}
		s.Sysctls[key] = strings.TrimSpace(string(v))
	}
	for _, key := range changedByNode {
		if v, err := os.ReadFile("/proc/sys/" + key); err == nil {
			s.Sysctls[key] = strings.TrimSpace(string(v))
		}
	}
	for _, p := range hostPaths {
		_, err := os.Lstat(p)
		s.Existed[p] = err == nil
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
// pod, CoreDNS and the kubelet next, then every pod sandbox is stopped and removed
// through the CRI (which runs the CNI plugins' DEL), then containerd, kube-proxy's
// rules, the bridge, leftover mounts and cgroups, the sysctls, and Dir. It returns an
// error naming whatever is still there afterwards.
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
	stop("kube-controller-manager", "kube-scheduler", "coredns", "kubelet")
	if c.hasProc("containerd") {
		if err := c.removeSandboxes(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	stop("kube-proxy", "containerd")
	errs = append(errs, c.killStrays(), c.deleteBridge(), c.unmountAll(), removeCgroups(cgroupRoot), c.removeAddedIptables())
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

// removeAddedIptables deletes the rules and chains added since Start (kube-proxy's,
// the kubelet's, the CNI plugins'), and nothing else: rules that other software added
// meanwhile stay.
func (c *Cluster) removeAddedIptables() error {
	if c.before.Iptables == nil {
		return nil
	}
	lines, err := iptablesLines()
	if err != nil {
		return err
	}
	var rules, chains [][]string
	for _, l := range lines {
		if slices.Contains(c.before.Iptables, l) {
			continue
		}
		f := splitRule(l) // iptables-save, table, then ":CHAIN" or "-A CHAIN ..."
		if len(f) < 3 {
			continue
		}
		args := append([]string{strings.TrimSuffix(f[0], "-save"), "-t", f[1]}, f[2:]...)
		if f[2] == "-A" {
			args[3] = "-D"
			rules = append(rules, args)
		} else {
			chains = append(chains, []string{args[0], "-t", f[1], "-F", strings.TrimPrefix(f[2], ":")})
		}
	}
	var errs []error
	run := func(args []string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil { //nolint:gosec // iptables
			errs = append(errs, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out))
		}
	}
	for _, r := range rules {
		run(r)
	}
	for _, ch := range chains {
		run(ch)
	}
	for _, ch := range chains {
		ch[3] = "-X"
		run(ch)
	}
	return errors.Join(errs...)
}

// splitRule splits an iptables-save line into words, keeping a double-quoted comment
// (with its backslash escapes) as one word.
func splitRule(line string) []string {
	var words []string
	var w strings.Builder
	quoted, escaped, any := false, false, false
	for _, r := range line {
		switch {
		case escaped:
			w.WriteRune(r)
			escaped = false
		case quoted && r == '\\':
			escaped = true
		case r == '"':
			quoted, any = !quoted, true
		case r == ' ' && !quoted:
			if w.Len() > 0 || any {
				words = append(words, w.String())
			}
			w.Reset()
			any = false
		default:
			w.WriteRune(r)
		}
	}
	if w.Len() > 0 || any {
		words = append(words, w.String())
	}
	return words
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

// strays lists processes whose executable is one of the node's binaries, whose
// command line names Dir, or that live in the kubelet's cgroup root (the pods').
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
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if (c.opts.Node != "" && strings.HasPrefix(exe, c.opts.Node+"/")) || inCgroupRoot(cg) ||
			(c.Dir != "" && (strings.Contains(string(cmdline), c.Dir+"/") || strings.HasPrefix(exe, c.Dir+"/"))) {
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

// deleteBridge deletes the pods' bridge and the veths still attached to it (a pod
// whose CNI DEL never ran, because its run was killed: deleting the host end of a
// veth deletes its peer in the pod's namespace too).
func (c *Cluster) deleteBridge() error {
	if _, err := net.InterfaceByName(bridgeName); err != nil {
		return nil
	}
	out, err := exec.Command("ip", "-o", "link", "show", "master", bridgeName).Output()
	if err != nil {
		return fmt.Errorf("list the links of bridge %s: %w", bridgeName, err)
	}
	links := []string{}
	for _, l := range strings.Split(string(out), "\n") {
		// "7: vethabc@if2: <...> ..."
		if f := strings.Fields(l); len(f) > 1 {
			links = append(links, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	var errs []error
	for _, l := range append(links, bridgeName) {
		if out, err := exec.Command("ip", "link", "delete", l).CombinedOutput(); err != nil { //nolint:gosec // our links
			errs = append(errs, fmt.Errorf("delete %s: %w: %s", l, err, out))
		}
	}
	return errors.Join(errs...)
}

// unmountAll detaches every mount under Dir, deepest first (a kubelet stopped before
// its pods leaves their volumes; the pods' network namespaces are mounted under Dir).
func (c *Cluster) unmountAll() error {
	var errs []error
	for _, m := range c.mounts() {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// mounts lists the mount points under Dir, deepest first.
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
		if c.Dir != "" && strings.HasPrefix(mp, c.Dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// removeCgroups removes the kubelet's cgroup tree (its cgroupRoot, name) from every
// cgroup hierarchy, children first.
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
	for key, v := range c.before.Sysctls {
		if err := os.WriteFile("/proc/sys/"+key, []byte(v), 0o644); err != nil { //nolint:gosec // procfs
			errs = append(errs, fmt.Errorf("restore sysctl %s: %w", key, err))
		}
	}
	for _, p := range hostPaths {
		if c.before.Existed != nil && !c.before.Existed[p] {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
			}
		}
	}
	if c.before.Existed["/var/log/containers"] {
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
	if links, err := linkNames(); err == nil && c.before.Links != nil {
		for _, l := range links {
			if !slices.Contains(c.before.Links, l) {
				left = append(left, "network device "+l)
			}
		}
	}
	if lines, err := iptablesLines(); err == nil && c.before.Iptables != nil {
		for _, l := range lines {
			if !slices.Contains(c.before.Iptables, l) {
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
	for key, was := range c.before.Sysctls {
		if v, err := os.ReadFile("/proc/sys/" + key); err == nil && strings.TrimSpace(string(v)) != was {
			left = append(left, fmt.Sprintf("sysctl %s=%s (was %s)", key, strings.TrimSpace(string(v)), was))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind: %s", strings.Join(left, "; "))
	}
	return nil
}
