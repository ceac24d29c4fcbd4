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

// Command demo is the main job on an embedded control plane: it starts kube-apiserver
// and etcd, installs the Helm chart, runs the real servicekey-operator binary as
// controller and token server (each as its chart ServiceAccount, with the chart's
// flags), walks a ServiceKey through issue, a token exchange verified through the
// JWKS, a protected API call, rotation, repair, suspension and deletion, printing
// each step. Then
// it keeps the cluster running for you to explore (or exits with --exit).
// Run it with `make demo`.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/servicekey-operator/servicekey-operator/api/keyutil"
	v1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/hack/stack"
	"github.com/servicekey-operator/servicekey-operator/hack/testenv"
	"github.com/servicekey-operator/servicekey-operator/verifier"
)

func main() {
	exit := flag.Bool("exit", false, "exit after the walkthrough instead of keeping the cluster running")
	binary := flag.String("binary", "bin/servicekey-operator", "the servicekey-operator binary to run")
	helm := flag.String("helm", "bin/helm", "the helm binary (make demo passes the pinned one)")
	flag.Parse()
	// With the output piped into `head` or a closed terminal, keep going and clean up
	// (stop the components and the control plane) instead of dying on SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)
	if err := run(*binary, *helm, *exit); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo failed:", err)
		os.Exit(1)
	}
}

type demo struct {
	binary  string
	c       client.Client
	dir     string
	metrics string
}

// Where the local processes listen.
const (
	controllerMetrics = "127.0.0.1:18080"
	controllerProbes  = "127.0.0.1:18081"
	tokenMetrics      = "127.0.0.1:19090"
)

func run(binary, helm string, exitAfter bool) error {
	ctx := context.Background()
	if err := portsFree(tokenAddress, controllerMetrics, controllerProbes, tokenMetrics); err != nil {
		return err
	}
	step("Starting an embedded control plane (kube-apiserver + etcd built by hack/envtest-build.sh)")
	env, err := testenv.StartWithoutCRDs()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	dir, err := os.MkdirTemp("", "servicekey-demo-")
	if err != nil {
		return err
	}
	say("API server up at %s", env.Config.Host)
	s, err := install(ctx, env, binary, helm, dir)
	if err != nil {
		return err
	}
	step("Running both components as local processes, each as its chart ServiceAccount (impersonation)")
	for _, c := range []stack.Component{s.Controller, s.TokenServer} {
		say("%s as %s:", c.Name, c.ServiceAccount)
		say("  %s %s", filepath.Base(binary), strings.Join(c.Args, " "))
	}
	if err := s.Start(ctx); err != nil {
		return err
	}
	defer s.Stop()
	say("both ready; logs: %s, %s", s.Controller.Log, s.TokenServer.Log)

	d := demo{binary: binary, c: env.Client, dir: dir, metrics: controllerMetrics}
	if err := d.walkthrough(); err != nil {
		return err
	}
	if exitAfter {
		step("Done (--exit): stopping both components and the control plane")
		return nil
	}
	return keepRunning(dir, s)
}

// install runs helm lint and helm install as a cluster admin would.
func install(ctx context.Context, env *testenv.Env, binary, helm, dir string) (*stack.Stack, error) {
	step("Installing the Helm chart: helm install servicekey-operator charts/servicekey-operator -n servicekey-system")
	say("--set issuer=%s --set tokenServer.defaultAudiences={%s}", demoIssuer, demoAudience)
	helmLog, err := os.Create(filepath.Join(dir, "helm.log"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = helmLog.Close() }()
	s, err := stack.Install(ctx, stack.Options{Env: env, Helm: helm, Binary: binary, Dir: dir,
		TokenAddress: tokenAddress, ControllerMetrics: controllerMetrics, ControllerProbes: controllerProbes,
		TokenMetrics: tokenMetrics, Set: []string{"tokenServer.defaultAudiences={" + demoAudience + "}"}, Log: helmLog})
	if err != nil {
		return nil, fmt.Errorf("%w (helm output: %s)", err, helmLog.Name())
	}
	say("helm lint passed; installed %d objects (helm output and NOTES: %s):", len(s.Manifest), helmLog.Name())
	for _, o := range s.Manifest {
		say("  %-26s %s", o.GetKind(), o.GetName())
	}
	say("the CRD is established: kubectl get servicekeys works")
	return s, nil
}

// portsFree checks the demo's fixed addresses before anything starts, so a second
// demo (or anything else on those ports) is reported plainly.
func portsFree(addrs ...string) error {
	for _, a := range addrs {
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", a)
		if err != nil {
			return fmt.Errorf("%s is in use (is another demo running?): %w", a, err)
		}
		_ = ln.Close()
	}
	return nil
}

func keepRunning(dir string, s *stack.Stack) error {
	step("The cluster keeps running. Try:")
	say("export KUBECONFIG=%s", filepath.Join(dir, "kubeconfig"))
	say("kubectl get servicekeys -A        # or: kubectl get sk -A")
	say("kubectl describe sk billing       # conditions and events")
	say("%s/bin/helm-* list -A --kubeconfig $KUBECONFIG", testenv.RepoRoot())
	say("curl -s %s/.well-known/openid-configuration", s.Issuer)
	say("curl -s http://%s/metrics | grep servicekey_", controllerMetrics)
	say("logs: %s, %s", s.Controller.Log, s.TokenServer.Log)
	say("Press Ctrl-C to stop everything.")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	<-sig
	step("Stopping")
	return nil
}

func (d demo) walkthrough() error {
	ctx := context.Background()
	step("Applying config/samples/auth_v1alpha1_servicekey_minimal.yaml")
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", "auth_v1alpha1_servicekey_minimal.yaml"))
	if err != nil {
		return err
	}
	sk := &v1.ServiceKey{}
	if err := yaml.Unmarshal(data, sk); err != nil {
		return err
	}
	fmt.Printf("\n%s\n", data)
	if err := d.c.Create(ctx, sk); err != nil {
		return err
	}
	sk, err = d.waitFor(sk, "Ready", func(sk *v1.ServiceKey) bool { return hasReason(v1.ReasonIssued)(sk) && len(sk.Status.Keys) == 1 })
	if err != nil {
		return err
	}
	d.printKey(sk)
	secret, err := d.secret(sk)
	if err != nil {
		return err
	}
	kf, err := printSecret(secret)
	if err != nil {
		return err
	}
	v, err := verifier.New(ctx, verifier.Options{Issuer: demoIssuer, Audience: demoAudience})
	if err != nil {
		return err
	}
	if err := getToken(ctx, v, kf); err != nil {
		return err
	}
	if err := cliToken(d.binary, d.dir, kf); err != nil {
		return err
	}
	if err := shellToken(d.dir, secret); err != nil {
		return err
	}
	if err := protectedCall(ctx, v, d.dir); err != nil {
		return err
	}
	if err := d.policy(); err != nil {
		return err
	}
	return d.lifecycle(sk)
}

// introspectionPolicy is what the cluster admin applies in the demo's policy step.
const introspectionPolicy = `apiVersion: auth.servicekey.dev/v1alpha1
kind: ServiceKeyPolicy
metadata:
  name: introspection
spec:
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: default
  allowed:
    scopes: ["servicekey:introspect"]
`

// policy shows a ServiceKeyPolicy refusing a ServiceKey, then one permitting it.
func (d demo) policy() error {
	ctx := context.Background()
	step("Tenant policy: a ServiceKey asking for the reserved scope servicekey:introspect")
	sk := &v1.ServiceKey{ObjectMeta: metav1.ObjectMeta{Name: "auditor", Namespace: "default"},
		Spec: v1.ServiceKeySpec{Scopes: []string{"servicekey:introspect"}}}
	if err := d.c.Create(ctx, sk); err != nil {
		return err
	}
	sk, err := d.waitFor(sk, "Ready=False PolicyDenied", hasReason(v1.ReasonPolicyDenied))
	if err != nil {
		return err
	}
	d.printKey(sk)
	say("the chart's default policy allows every scope by wildcard, and a wildcard never matches a")
	say("reserved scope: no key was issued. The cluster admin grants it explicitly (kubectl apply -f -):")
	fmt.Printf("\n%s\n", introspectionPolicy)
	p := &v1.ServiceKeyPolicy{}
	if err := yaml.Unmarshal([]byte(introspectionPolicy), p); err != nil {
		return err
	}
	if err := d.c.Create(ctx, p); err != nil {
		return err
	}
	if sk, err = d.waitFor(sk, "Ready, the key issued", hasReason(v1.ReasonIssued)); err != nil {
		return err
	}
	d.printKey(sk)
	return nil
}

func (d demo) lifecycle(sk *v1.ServiceKey) error {
	ctx := context.Background()
	step("Rotating: kubectl annotate sk billing auth.servicekey.dev/rotate=demo-1")
	if err := d.patch(sk, func(sk *v1.ServiceKey) { sk.Annotations = map[string]string{v1.AnnotationRotate: "demo-1"} }); err != nil {
		return err
	}
	sk, err := d.waitFor(sk, "a new Active key and the old one Retiring", func(sk *v1.ServiceKey) bool { return len(sk.Status.Keys) == 2 })
	if err != nil {
		return err
	}
	d.printKey(sk)

	step("Deleting the Secret by accident: kubectl delete secret billing")
	secret, err := d.secret(sk)
	if err != nil {
		return err
	}
	if err := d.c.Delete(ctx, secret); err != nil {
		return err
	}
	if sk, err = d.waitFor(sk, "the Secret restored with a new key", func(sk *v1.ServiceKey) bool { return len(sk.Status.Keys) == 3 }); err != nil {
		return err
	}
	d.printKey(sk)

	step("Suspending: spec.suspended=true (grants refused, nothing deleted)")
	if err := d.patch(sk, func(sk *v1.ServiceKey) { sk.Spec.Suspended = true }); err != nil {
		return err
	}
	if sk, err = d.waitFor(sk, "Ready=False Suspended", hasReason(v1.ReasonSuspended)); err != nil {
		return err
	}
	d.printKey(sk)
	say("a grant now:")
	kf, err := d.keyFile(sk)
	if err != nil {
		return err
	}
	if err := tryGrant(kf); err != nil {
		return err
	}
	if err := d.patch(sk, func(sk *v1.ServiceKey) { sk.Spec.Suspended = false }); err != nil {
		return err
	}
	if sk, err = d.waitFor(sk, "Ready again, same key", hasReason(v1.ReasonIssued)); err != nil {
		return err
	}
	d.printKey(sk)
	say("a grant now:")
	if err := tryGrant(kf); err != nil {
		return err
	}
	if err := d.printEventsAndMetrics(sk); err != nil {
		return err
	}
	return d.revoke(sk, kf)
}

// revoke deletes the ServiceKey: the token server forgets its keys at once.
func (d demo) revoke(sk *v1.ServiceKey, kf keyutil.KeyFile) error {
	step("Revoking for good: kubectl delete sk billing")
	if err := d.c.Delete(context.Background(), sk); err != nil {
		return err
	}
	say("a grant with the deleted key, once the token server's watch has seen the delete:")
	var last string
	err := testenv.Poll("the grant refused", 30*time.Second, func() (bool, string) {
		status, body, err := grant(kf)
		last = fmt.Sprintf("HTTP %d: %s", status, body)
		return err == nil && status != http.StatusOK, last
	})
	say("%s", last)
	return err
}

// patch changes the ServiceKey, retrying on conflicts with the controller's writes.
func (d demo) patch(sk *v1.ServiceKey, change func(*v1.ServiceKey)) error {
	return testenv.UpdateServiceKey(context.Background(), d.c, client.ObjectKeyFromObject(sk), change)
}

// waitFor polls the ServiceKey until the controller has reconciled it and cond holds,
// printing progress.
func (d demo) waitFor(sk *v1.ServiceKey, what string, cond func(*v1.ServiceKey) bool) (*v1.ServiceKey, error) {
	say("waiting for %s ...", what)
	start := time.Now()
	cur := &v1.ServiceKey{}
	err := testenv.Poll(what, time.Minute, func() (bool, string) {
		if err := d.c.Get(context.Background(), client.ObjectKeyFromObject(sk), cur); err != nil {
			return false, err.Error()
		}
		reason := testenv.ReadyReason(cur)
		return reason != "" && cond(cur), fmt.Sprintf("Ready reason %q, %d keys", reason, len(cur.Status.Keys))
	})
	if err != nil {
		return nil, fmt.Errorf("%w; see the controller log", err)
	}
	say("done in %v", time.Since(start).Round(time.Millisecond))
	return cur, nil
}

// secret reads the ServiceKey's Secret, as a pod mounting it would see it.
func (d demo) secret(sk *v1.ServiceKey) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := d.c.Get(context.Background(), client.ObjectKey{Namespace: sk.Namespace, Name: sk.Status.SecretName}, s); err != nil {
		return nil, fmt.Errorf("get Secret %s: %w", sk.Status.SecretName, err)
	}
	return s, nil
}

func (d demo) keyFile(sk *v1.ServiceKey) (keyutil.KeyFile, error) {
	s, err := d.secret(sk)
	if err != nil {
		return keyutil.KeyFile{}, err
	}
	return keyutil.ParseKeyFile(s.Data[v1.SecretKeyJSON])
}

func hasReason(reason string) func(*v1.ServiceKey) bool {
	return func(sk *v1.ServiceKey) bool { return testenv.ReadyReason(sk) == reason }
}

func (d demo) printKey(sk *v1.ServiceKey) {
	c := meta.FindStatusCondition(sk.Status.Conditions, v1.ConditionReady)
	fmt.Printf("\n  %-8s %-6s %-18s %s\n", "NAME", "READY", "REASON", "SUBJECT")
	fmt.Printf("  %-8s %-6s %-18s %s\n", sk.Name, c.Status, c.Reason, sk.Status.Subject)
	fmt.Printf("  message: %s\n  keys:\n", c.Message)
	for _, k := range sk.Status.Keys {
		until := "no end"
		if k.NotAfter != nil {
			until = "until " + k.NotAfter.UTC().Format(time.RFC3339)
		}
		fmt.Printf("    %-9s %s  created %s, %s\n", k.State, k.KeyID, k.Created.UTC().Format(time.RFC3339), until)
	}
	fmt.Println()
}

// printSecret shows what a pod mounting the Secret gets, never the private key.
func printSecret(s *corev1.Secret) (keyutil.KeyFile, error) {
	kf, err := keyutil.ParseKeyFile(s.Data[v1.SecretKeyJSON])
	if err != nil {
		return keyutil.KeyFile{}, err
	}
	step("The Secret " + s.Name + " (type " + string(s.Type) + ") that pods mount holds key.json:")
	fmt.Printf("  key_id:      %s\n  client_id:   %s\n  user_id:     %s\n  issued:      %s\n  token_uri:   %s\n",
		kf.KeyID, kf.ClientID, kf.UserID, kf.Issued, kf.TokenURI)
	fmt.Printf("  private_key: <%d bytes of PEM; the demo never prints it>\n", len(kf.PrivateKey))
	fmt.Printf("  plus files: private-key.pem, client-id, key-id, token-uri, subject\n\n")
	return kf, nil
}
