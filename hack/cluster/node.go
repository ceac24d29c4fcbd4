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
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// sysctls the node needs: forwarding between pods and the host, and bridged pod
// traffic passing through iptables, so a pod reaching a Service whose endpoint is on
// the same bridge gets its reply un-NATed. Stop restores the values found.
var sysctls = map[string]string{
	"net/ipv4/ip_forward":                 "1",
	"net/bridge/bridge-nf-call-iptables":  "1",
	"net/bridge/bridge-nf-call-ip6tables": "1",
}

// changedByNode are the sysctls the kubelet sets (its kernel defaults, with
// protectKernelDefaults off) and kube-proxy may set: Stop restores them too.
var changedByNode = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/conf/all/route_localnet",
}

// cgroupRoot is the kubelet's cgroup root: the pods' cgroups live under it, never
// under a kubepods tree some other kubelet on the host owns.
const cgroupRoot = "servicekey-test"

func (c *Cluster) prepareHost(context.Context) error {
	for key, want := range sysctls {
		if err := os.WriteFile("/proc/sys/"+key, []byte(want), 0o644); err != nil { //nolint:gosec // procfs
			return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), want, err)
		}
	}
	return nil
}

// startContainerd writes containerd's configuration (every path under Dir, the CRI
// plugin using runc with cgroupfs and the CNI bridge) and imports the pause image.
// restrict_oom_score_adj (made for rootless containerd) keeps every container's
// oom_score_adj at or above containerd's own: root on the machines this runs on lacks
// CAP_SYS_RESOURCE, and runc fails to start a sandbox at the kubelet's -998 with
// "nsexec: failed to update /proc/self/oom_score_adj: Permission denied".
func (c *Cluster) startContainerd(ctx context.Context) error {
	if err := c.writeCNIConfig(); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ['io.containerd.nri.v1.nri']
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[5]q
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %[6]q
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[7]q]
    conf_dir = %[8]q
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = %[9]q
[plugins.'io.containerd.internal.v1.opt']
  path = %[10]q
`, c.path("containerd/root"), c.path("containerd/state"), c.socket(), c.path("containerd/ttrpc.sock"),
		SandboxImage, c.opts.Runc, c.opts.CNIBin, c.path("cni/net.d"), c.ports["containerd-stream"], c.path("containerd/opt"))
	if err := os.MkdirAll(c.path("containerd"), 0o700); err != nil {
		return fmt.Errorf("create containerd directory: %w", err)
	}
	if err := os.WriteFile(c.path("containerd/config.toml"), []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("write containerd config: %w", err)
	}
	// containerd finds containerd-shim-runc-v2 on PATH.
	p, err := c.start("containerd", filepath.Join(c.opts.Node, "containerd"),
		[]string{"--config=" + c.path("containerd/config.toml")}, "PATH="+c.opts.Node+":"+os.Getenv("PATH"))
	if err != nil {
		return err
	}
	if err := c.poll(ctx, "containerd socket", timeoutShort, func() (bool, string) {
		conn, err := net.Dial("unix", c.socket())
		if err != nil {
			return false, err.Error()
		}
		_ = conn.Close()
		return true, ""
	}); err != nil {
		return fmt.Errorf("%w; see %s", err, p.log)
	}
	return c.ImportImage(ctx, filepath.Join(c.opts.Node, "pause.tar"))
}

func (c *Cluster) socket() string { return c.path("containerd/containerd.sock") }

// ImportImage loads a docker-archive or OCI tarball into the node's image store (the
// k8s.io namespace the CRI plugin reads), as a registry pull would have.
func (c *Cluster) ImportImage(ctx context.Context, tarball string) error {
	out, err := exec.CommandContext(ctx, filepath.Join(c.opts.Node, "ctr"), "--address", c.socket(), //nolint:gosec // our own binary
		"--namespace", "k8s.io", "images", "import", "--platform", "linux/"+runtime.GOARCH, tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("import %s: %w: %s", tarball, err, out)
	}
	c.logf("imported %s", filepath.Base(tarball))
	return nil
}

// writeCNIConfig: one bridge with host-local addresses from PodCIDR, masquerading
// traffic that leaves it; the IPAM store lives under Dir.
func (c *Cluster) writeCNIConfig() error {
	dir := c.path("cni/net.d")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "servicekey-test",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, bridgeName, PodCIDR, c.path("cni/ipam"))
	if err := os.WriteFile(filepath.Join(dir, "10-servicekey-test.conflist"), []byte(conf), 0o600); err != nil {
		return fmt.Errorf("write CNI config: %w", err)
	}
	return nil
}

// startKubelet runs the kubelet against containerd with a configuration that keeps
// every file under Dir and gives pods (dnsPolicy ClusterFirst) CoreDNS on the node's
// address as their resolver. cgroup v1 is allowed (failCgroupV1: false) because the
// machines this runs on mount v1 controllers; eviction thresholds are low so a busy
// build disk does not evict the pods under test.
func (c *Cluster) startKubelet(ctx context.Context) error {
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://%[1]s
cgroupDriver: cgroupfs
cgroupRoot: /%[6]s
address: %[7]s
failCgroupV1: false
failSwapOn: false
port: %[2]s
healthzBindAddress: 127.0.0.1
healthzPort: %[3]s
readOnlyPort: 0
podLogsDir: %[4]q
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[5]q}
authorization: {mode: Webhook}
syncFrequency: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%%, nodefs.inodesFree: 1%%, imagefs.available: 1%%}
resolvConf: /etc/resolv.conf
clusterDNS: [%[7]s]
clusterDomain: %[8]s
`, c.socket(), c.ports["kubelet"], c.ports["kubelet-healthz"], c.path("pod-logs"), c.path("pki/ca.crt"), cgroupRoot, c.NodeIP, ClusterDomain)
	if err := os.WriteFile(c.path("kubelet.yaml"), []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("write kubelet config: %w", err)
	}
	if err := makeCgroupRoot(); err != nil {
		return err
	}
	p, err := c.start("kubelet", filepath.Join(c.opts.Node, "kubelet"), []string{
		"--config=" + c.path("kubelet.yaml"), "--kubeconfig=" + c.path("pki/kubelet.kubeconfig"),
		"--root-dir=" + c.path("kubelet"), "--hostname-override=" + NodeName, "--node-ip=" + c.NodeIP, "--v=1",
	})
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, p, "http://127.0.0.1:"+c.ports["kubelet-healthz"]+"/healthz", http.DefaultClient)
}

// makeCgroupRoot creates the kubelet's cgroup root in every v1 hierarchy (the kubelet
// wants it to exist); a cpuset child starts with the parent's CPUs and memory nodes.
func makeCgroupRoot() error {
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hierarchies {
		if filepath.Base(h) == "unified" {
			continue
		}
		dir := filepath.Join(h, cgroupRoot)
		if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // cgroupfs
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		if filepath.Base(h) != "cpuset" {
			continue
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				return fmt.Errorf("read %s: %w", f, err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil { //nolint:gosec // cgroupfs
				return fmt.Errorf("write %s: %w", f, err)
			}
		}
	}
	return nil
}

// startKubeProxy runs kube-proxy in iptables mode; it answers its healthz once it has
// programmed the Services.
func (c *Cluster) startKubeProxy(ctx context.Context) error {
	cfg := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %[1]q}
mode: iptables
clusterCIDR: %[2]s
hostnameOverride: %[3]s
healthzBindAddress: 127.0.0.1:%[4]s
metricsBindAddress: 127.0.0.1:%[5]s
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
`, c.path("pki/kube-proxy.kubeconfig"), PodCIDR, NodeName, c.ports["proxy-healthz"], c.ports["proxy-metrics"])
	if err := os.WriteFile(c.path("kube-proxy.yaml"), []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("write kube-proxy config: %w", err)
	}
	p, err := c.start("kube-proxy", filepath.Join(c.opts.Node, "kube-proxy"), []string{"--config=" + c.path("kube-proxy.yaml"), "--v=1"})
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, p, "http://127.0.0.1:"+c.ports["proxy-healthz"]+"/healthz", http.DefaultClient)
}
