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

// Package cluster runs a one-node Kubernetes cluster on this machine from real parts,
// for the tests that need pods: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler as the control plane; containerd with runc, the CNI bridge plugin and
// kube-proxy (iptables) as the node, registered by a kubelet; CoreDNS as the cluster
// DNS. No image is pulled: the sandbox (pause) image and the images under test are
// imported from tarballs.
//
// It needs root (the kubelet, runc and the network do), cgroups, and the binaries
// hack/cluster-build.sh builds. Stop tears everything down and reports whatever it
// could not remove (a process, a mount, a network device, an iptables chain), so a
// test can assert the machine is left as it was found.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
)

const (
	// NodeName is the one node's name.
	NodeName = "node-1"
	// PodCIDR is where the CNI bridge plugin takes pod addresses from.
	PodCIDR = "10.244.0.0/16"
	// ServiceCIDR is where the API server takes ClusterIPs from.
	ServiceCIDR = "10.96.0.0/16"
	// SandboxImage is the pause image, built from Kubernetes' pause.c and imported;
	// the name says it was never pulled.
	SandboxImage = "localhost/servicekey-test/pause:3.10"
	bridgeName   = "skc0"
)

// Options say where the binaries are.
type Options struct {
	// Assets holds etcd and kube-apiserver (hack/envtest-build.sh).
	Assets string
	// Node holds kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
	// containerd, containerd-shim-runc-v2, ctr, coredns and pause (hack/cluster-build.sh).
	Node string
	// Runc is the OCI runtime containerd runs containers with (default: runc on PATH).
	Runc string
	// CNIBin holds the CNI plugins (default /usr/lib/cni, Debian's containernetworking-plugins).
	CNIBin string
	// Logf receives progress lines (default: stderr).
	Logf func(format string, args ...any)
}

// Cluster is a running one-node cluster.
type Cluster struct {
	opts Options
	// Dir holds every file of the cluster: certificates, data, logs, sockets.
	Dir string
	// Kubeconfig is a cluster-admin kubeconfig (system:masters).
	Kubeconfig string
	// Config is the same identity as a rest.Config.
	Config *rest.Config
	// Clientset talks to the API server as cluster-admin.
	Clientset kubernetes.Interface
	// NodeIP is the address the node, the API server and the cluster DNS are reached at
	// from pods.
	NodeIP string
	// KeepLogs: Stop moves the components' logs to Dir+"-logs" instead of deleting them.
	KeepLogs bool

	ca     *ca
	ports  map[string]string
	procs  []*proc
	before hostState
}

func (c *Cluster) logf(format string, args ...any) { c.opts.Logf("[cluster] "+format, args...) }

// Start brings up the cluster and returns once the node is Ready and kube-proxy has
// programmed the Services. On error it tears down what it started.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	if o.Logf == nil {
		o.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	o.CNIBin = defaultString(o.CNIBin, "/usr/lib/cni")
	if o.Runc == "" {
		if o.Runc, err = exec.LookPath("runc"); err != nil {
			return nil, errors.New("runc is not on PATH (Debian: apt-get install runc)")
		}
	}
	if err := preflight(o); err != nil {
		return nil, err
	}
	if err := cleanStale(o); err != nil {
		return nil, fmt.Errorf("an earlier run left things behind that could not be removed: %w", err)
	}
	c = &Cluster{opts: o}
	if c.before, err = snapshotHost(); err != nil {
		return nil, err
	}
	if c.Dir, err = os.MkdirTemp("", "skc-"); err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	if err := c.writeRunFiles(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if stopErr := c.Stop(context.WithoutCancel(ctx)); stopErr != nil {
				err = fmt.Errorf("%w (and tearing down: %w)", err, stopErr)
			}
		}
	}()
	started := time.Now()
	steps := []struct {
		what string
		run  func(context.Context) error
	}{
		{"host network settings", c.prepareHost},
		{"certificates", c.pki},
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"CoreDNS", c.startCoreDNS},
		{"kube-controller-manager and kube-scheduler", c.startControllers},
		{"containerd", c.startContainerd},
		{"kubelet", c.startKubelet},
		{"kube-proxy", c.startKubeProxy},
		{"node Ready", c.waitNodeReady},
	}
	for _, s := range steps {
		t := time.Now()
		if err := s.run(ctx); err != nil {
			return c, fmt.Errorf("%s: %w", s.what, err)
		}
		c.logf("%s: ok (%.1fs)", s.what, time.Since(t).Seconds())
	}
	c.logf("one-node cluster up in %.1fs: KUBECONFIG=%s", time.Since(started).Seconds(), c.Kubeconfig)
	return c, nil
}

// writeRunFiles records in Dir whose run it is (cleanStale leaves those of live
// processes alone) and the host as it was, for cleanStale to restore should this
// process die before Stop.
func (c *Cluster) writeRunFiles() error {
	host, err := json.Marshal(c.before)
	if err != nil {
		return fmt.Errorf("encode host state: %w", err)
	}
	if err := os.WriteFile(c.path(hostFile), host, 0o600); err != nil {
		return fmt.Errorf("write host state: %w", err)
	}
	// Last: a directory with an owner is complete.
	return c.writeOwner(os.Getpid())
}

func (c *Cluster) writeOwner(pid int) error {
	if err := os.WriteFile(c.path(ownerFile), []byte(strconv.Itoa(pid)), 0o600); err != nil {
		return fmt.Errorf("write owner: %w", err)
	}
	return nil
}

func defaultString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// preflight fails early, naming what is missing.
func preflight(o Options) error {
	if os.Geteuid() != 0 {
		return errors.New("the kubelet, runc and the pod network need root")
	}
	var missing []string
	for _, f := range []string{
		filepath.Join(o.Assets, "etcd"), filepath.Join(o.Assets, "kube-apiserver"),
		filepath.Join(o.Node, "kube-controller-manager"), filepath.Join(o.Node, "kube-scheduler"),
		filepath.Join(o.Node, "kubelet"), filepath.Join(o.Node, "kube-proxy"),
		filepath.Join(o.Node, "containerd"), filepath.Join(o.Node, "containerd-shim-runc-v2"),
		filepath.Join(o.Node, "ctr"), filepath.Join(o.Node, "coredns"), filepath.Join(o.Node, "pause"),
		filepath.Join(o.CNIBin, "bridge"), filepath.Join(o.CNIBin, "host-local"), filepath.Join(o.CNIBin, "loopback"),
		filepath.Join(o.CNIBin, "portmap"),
	} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	for _, cmd := range []string{"iptables", "iptables-save", "ip"} {
		if _, err := exec.LookPath(cmd); err != nil {
			missing = append(missing, cmd)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s (run hack/cluster-build.sh; Debian packages: runc containernetworking-plugins iptables)", strings.Join(missing, ", "))
	}
	if _, err := os.Stat("/proc/sys/net/bridge"); err != nil {
		return errors.New("bridged pod traffic cannot reach iptables: the br_netfilter kernel module is not loaded (modprobe br_netfilter)")
	}
	return dnsPortFree()
}

// pki writes the CA, the serving and client certificates, the service account key and
// a kubeconfig per component.
func (c *Cluster) pki(context.Context) error {
	ip, err := nodeIP()
	if err != nil {
		return err
	}
	c.NodeIP = ip
	ports, err := testenv.FreePorts(9)
	if err != nil {
		return fmt.Errorf("free ports: %w", err)
	}
	c.ports = map[string]string{}
	for i, name := range []string{"etcd", "etcd-peer", "apiserver", "kubelet", "kubelet-healthz", "proxy-healthz", "proxy-metrics", "containerd-stream", "coredns-ready"} {
		_, c.ports[name], _ = net.SplitHostPort(ports[i])
	}
	for _, d := range []string{"pki", "logs"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	if c.ca, err = newCA(); err != nil {
		return err
	}
	if err := os.WriteFile(c.path("pki/ca.crt"), c.ca.pem, 0o600); err != nil {
		return fmt.Errorf("write CA: %w", err)
	}
	serving, err := c.ca.issue("kube-apiserver", nil, []string{"127.0.0.1", ip, firstServiceIP(), "localhost",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		return err
	}
	if _, _, err := writePair(c.path("pki"), "apiserver", serving); err != nil {
		return err
	}
	// The API server's identity towards kubelets (logs, exec): an administrator.
	kubeletClient, err := c.ca.issue("kube-apiserver-kubelet-client", []string{"system:masters"}, nil)
	if err != nil {
		return err
	}
	if _, _, err := writePair(c.path("pki"), "apiserver-kubelet-client", kubeletClient); err != nil {
		return err
	}
	if _, _, err := serviceAccountKey(c.path("pki")); err != nil {
		return err
	}
	return c.kubeconfigs()
}

func (c *Cluster) kubeconfigs() error {
	server := "https://" + net.JoinHostPort(c.NodeIP, c.ports["apiserver"])
	ids := []struct{ name, cn, group string }{
		{"admin", "servicekey-test-admin", "system:masters"},
		{"kube-controller-manager", "system:kube-controller-manager", ""},
		{"kube-scheduler", "system:kube-scheduler", ""},
		{"kubelet", "system:node:" + NodeName, "system:nodes"},
		{"kube-proxy", "system:kube-proxy", ""},
		{"coredns", corednsUser, ""},
	}
	for _, id := range ids {
		var groups []string
		if id.group != "" {
			groups = []string{id.group}
		}
		if _, err := c.ca.kubeconfig(c.path("pki"), id.name, server, id.cn, groups...); err != nil {
			return err
		}
	}
	c.Kubeconfig = c.path("pki/admin.kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load %s: %w", c.Kubeconfig, err)
	}
	c.Config = cfg
	c.Clientset, err = kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	return nil
}

func (c *Cluster) path(rel string) string { return filepath.Join(c.Dir, rel) }

// firstServiceIP is the ClusterIP of the kubernetes Service (the first of ServiceCIDR).
func firstServiceIP() string {
	ip, _, _ := net.ParseCIDR(ServiceCIDR)
	ip = ip.To4()
	return net.IPv4(ip[0], ip[1], ip[2], ip[3]+1).String()
}

// nodeIP is the first global IPv4 address of an interface that is up: the address
// pods reach the API server at (through the kubernetes Service) and the kubelet at.
func nodeIP() (string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("list network interfaces: %w", err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || ifc.Name == bridgeName {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP.String(), nil
			}
		}
	}
	return "", errors.New("no network interface with an IPv4 address is up: the node needs one for pods to reach the API server")
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	url := "http://127.0.0.1:" + c.ports["etcd"]
	p, err := c.start("etcd", filepath.Join(c.opts.Assets, "etcd"), []string{
		"--data-dir=" + c.path("etcd"), "--listen-client-urls=" + url, "--advertise-client-urls=" + url,
		"--listen-peer-urls=http://127.0.0.1:" + c.ports["etcd-peer"], "--unsafe-no-fsync", "--log-level=warn",
	})
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, p, url+"/health", http.DefaultClient)
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	pki := c.path("pki")
	p, err := c.start("kube-apiserver", filepath.Join(c.opts.Assets, "kube-apiserver"), []string{
		"--etcd-servers=http://127.0.0.1:" + c.ports["etcd"],
		"--bind-address=" + c.NodeIP, "--secure-port=" + c.ports["apiserver"], "--advertise-address=" + c.NodeIP,
		"--anonymous-auth=false",
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--client-ca-file=" + pki + "/ca.crt",
		"--tls-cert-file=" + pki + "/apiserver.crt", "--tls-private-key-file=" + pki + "/apiserver.key",
		"--kubelet-client-certificate=" + pki + "/apiserver-kubelet-client.crt",
		"--kubelet-client-key=" + pki + "/apiserver-kubelet-client.key",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki + "/sa.pub", "--service-account-signing-key-file=" + pki + "/sa.key",
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--profiling=false", "--v=1",
	})
	if err != nil {
		return err
	}
	client, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		return fmt.Errorf("HTTP client: %w", err)
	}
	return c.waitHTTP(ctx, p, c.Config.Host+"/readyz", client)
}

func (c *Cluster) startControllers(ctx context.Context) error {
	pki := c.path("pki")
	if _, err := c.start("kube-controller-manager", filepath.Join(c.opts.Node, "kube-controller-manager"), []string{
		"--kubeconfig=" + pki + "/kube-controller-manager.kubeconfig",
		"--service-account-private-key-file=" + pki + "/sa.key", "--root-ca-file=" + pki + "/ca.crt",
		"--use-service-account-credentials", "--leader-elect=false", "--secure-port=0",
		"--cluster-name=servicekey-test", "--v=1",
	}); err != nil {
		return err
	}
	if _, err := c.start("kube-scheduler", filepath.Join(c.opts.Node, "kube-scheduler"), []string{
		"--kubeconfig=" + pki + "/kube-scheduler.kubeconfig", "--leader-elect=false", "--secure-port=0", "--v=1",
	}); err != nil {
		return err
	}
	// kube-controller-manager creates every namespace's default ServiceAccount: pods
	// cannot be admitted before it does.
	return c.poll(ctx, "the default ServiceAccount", 2*time.Minute, func() (bool, string) {
		_, err := c.Clientset.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "not created yet"
		}
		return err == nil, fmt.Sprint(err)
	})
}

func (c *Cluster) waitNodeReady(ctx context.Context) error {
	return c.poll(ctx, "node "+NodeName+" Ready", 3*time.Minute, func() (bool, string) {
		n, err := c.Clientset.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, cond.Reason + ": " + cond.Message
			}
		}
		return false, "no Ready condition yet"
	})
}
