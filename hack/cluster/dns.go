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
	"path/filepath"
	"slices"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// ClusterDomain is the DNS domain of the cluster: a Service is <svc>.<ns>.svc.ClusterDomain.
	ClusterDomain = "cluster.local"
	// corednsUser is the identity CoreDNS reads Services with (its client certificate's CN).
	corednsUser = "servicekey-test-coredns"
	dnsPort     = "53"
)

// dnsPortFree fails when port 53 of the node's address is taken (by a DNS server on
// the host listening on every address, say): CoreDNS serves the pods there.
func dnsPortFree() error {
	ip, err := nodeIP()
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(ip, dnsPort)
	taken := func(err error) error {
		return fmt.Errorf("port %s is taken, and the cluster DNS (CoreDNS) serves the pods there: "+
			"stop the DNS server listening on it or on every address (ss -lntup 'sport = :53'): %w", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return taken(err)
	}
	_ = l.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return taken(err)
	}
	_ = pc.Close()
	return nil
}

// corefile: CoreDNS answers on the node's address only, from the API server, for the
// cluster domain and the reverse zones of the Service and pod ranges; every other name
// is NXDOMAIN (nothing is forwarded: there is no upstream DNS to trust).
func (c *Cluster) corefile() string {
	return fmt.Sprintf(`%[2]s %[3]s %[4]s {
    bind %[1]s
    errors
    ready 127.0.0.1:%[5]s
    cache 30
    kubernetes %[2]s %[3]s %[4]s {
        kubeconfig %[6]s
    }
}
. {
    bind %[1]s
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
`, c.NodeIP, ClusterDomain, ServiceCIDR, PodCIDR, c.ports["coredns-ready"], c.path("pki/coredns.kubeconfig"))
}

// startCoreDNS grants CoreDNS read access to what its kubernetes plugin watches,
// starts it with the Corefile in Dir, and waits until it has read the Services and
// answers for the kubernetes Service on the node's address.
func (c *Cluster) startCoreDNS(ctx context.Context) error {
	if err := c.grantCoreDNS(ctx); err != nil {
		return err
	}
	conf := c.path("Corefile")
	if err := os.WriteFile(conf, []byte(c.corefile()), 0o600); err != nil {
		return fmt.Errorf("write Corefile: %w", err)
	}
	p, err := c.start("coredns", filepath.Join(c.opts.Node, "coredns"), []string{"-conf=" + conf})
	if err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, p, "http://127.0.0.1:"+c.ports["coredns-ready"]+"/ready", http.DefaultClient); err != nil {
		return fmt.Errorf("%w; see %s", err, p.log)
	}
	name, want := "kubernetes.default.svc."+ClusterDomain+".", firstServiceIP()
	return c.poll(ctx, "CoreDNS resolving "+name, timeoutShort, func() (bool, string) {
		lookup, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		addrs, err := c.DNSResolver().LookupHost(lookup, name)
		if err != nil {
			return false, err.Error()
		}
		return slices.Equal(addrs, []string{want}), fmt.Sprintf("%v, want %s", addrs, want)
	})
}

// grantCoreDNS lets corednsUser list and watch Services, EndpointSlices and
// Namespaces, and nothing else.
func (c *Cluster) grantCoreDNS(ctx context.Context) error {
	name := "servicekey-test:coredns"
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	if _, err := c.Clientset.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create ClusterRole %s: %w", name, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: corednsUser}},
	}
	if _, err := c.Clientset.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create ClusterRoleBinding %s: %w", name, err)
	}
	return nil
}

// DNSResolver asks the cluster's CoreDNS, and nothing else, as a pod with the default
// dnsPolicy (ClusterFirst) does; names outside the cluster domain are not found.
func (c *Cluster) DNSResolver() *net.Resolver {
	server := net.JoinHostPort(c.NodeIP, dnsPort)
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, server)
	}}
}
