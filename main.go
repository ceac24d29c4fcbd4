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

// Command servicekey-operator is the one binary of the project. Its subcommands are
// the controller (issues ServiceKeys' key pairs), the token server, and a token CLI;
// main only parses flags and wires components together.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	goruntime "runtime"

	uberzap "go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	authv1alpha1 "github.com/servicekey-operator/servicekey-operator/api/v1alpha1"
	"github.com/servicekey-operator/servicekey-operator/controllers"
)

const usage = `Usage: servicekey-operator <command> [flags]

Commands:
  controller   run the ServiceKey controller (key pairs, Secrets, status)

Run 'servicekey-operator <command> -h' for a command's flags.
`

// exitUsage is the exit code for a command line that cannot be understood.
const exitUsage = 2

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run dispatches to a subcommand and returns the process exit code.
func run(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "controller":
		return runController(args[1:], stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stderr, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}

// controllerFlags are the controller subcommand's flags.
type controllerFlags struct {
	kubeconfig       string
	metricsAddr      string
	probeAddr        string
	leaderElect      bool
	leaderElectionNS string
	leaderElectionID string
	tokenURI         string
	allowCustomSubj  bool
	workers          int
	zapOpts          zap.Options
}

func parseControllerFlags(args []string, stderr io.Writer) (*controllerFlags, error) {
	f := &controllerFlags{}
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "path to a kubeconfig; default: $KUBECONFIG, in-cluster config, ~/.kube/config")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 disables it")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz probes")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "elect a leader so only one replica reconciles at a time")
	fs.StringVar(&f.leaderElectionNS, "leader-election-namespace", "", "namespace of the leader-election Lease; default: the pod's namespace")
	fs.StringVar(&f.leaderElectionID, "leader-election-id", "controller.servicekey.dev", "name of the leader-election Lease")
	fs.StringVar(&f.tokenURI, "token-uri", "", "token endpoint URL written into key files (token_uri), e.g. https://token.example.com/oauth2/token")
	fs.BoolVar(&f.allowCustomSubj, "allow-custom-subjects", false, "allow spec.subject to name identities other than system:servicekey:<namespace>:<name>")
	fs.IntVar(&f.workers, "max-concurrent-reconciles", goruntime.NumCPU(), "ServiceKeys reconciled in parallel (key generation is CPU-bound)")
	f.zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if f.workers < 1 {
		return nil, fmt.Errorf("--max-concurrent-reconciles must be at least 1, got %d", f.workers)
	}
	return f, nil
}

func runController(args []string, stderr io.Writer) int {
	f, err := parseControllerFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return exitUsage
	}
	clamped := capVerbosity(&f.zapOpts, controllers.MaxLogVerbosity)
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&f.zapOpts)))
	log := ctrl.Log.WithName("setup")
	if clamped {
		log.Info("log verbosity capped: client-go logs request bodies, which include private keys, above this level",
			"maxVerbosity", controllers.MaxLogVerbosity)
	}

	if err := startController(f); err != nil {
		log.Error(err, "controller stopped")
		return 1
	}
	return 0
}

func startController(f *controllerFlags) error {
	cfg, err := restConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return fmt.Errorf("register core types: %w", err)
	}
	if err := authv1alpha1.AddToScheme(scheme); err != nil {
		return fmt.Errorf("register ServiceKey types: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   controllers.CacheOptions(),
		Metrics:                 metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:  f.probeAddr,
		LeaderElection:          f.leaderElect,
		LeaderElectionID:        f.leaderElectionID,
		LeaderElectionNamespace: f.leaderElectionNS,
		// Stepping down at once on shutdown lets the next replica take over quickly.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	m := controllers.NewMetrics(mgr.GetCache())
	if err := m.Register(crmetrics.Registry); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	r := &controllers.ServiceKeyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("servicekey-operator"),
		Clock:     clock.RealClock{},
		Keys:      controllers.RSAKeys{},
		Policy:    controllers.Policy{AllowCustomSubjects: f.allowCustomSubj, TokenURI: f.tokenURI},
		Metrics:   m,
	}
	if err := r.SetupWithManager(mgr, f.workers); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add readiness check: %w", err)
	}
	ctrl.Log.WithName("setup").Info("starting controller manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// capVerbosity lowers a --zap-log-level more verbose than V(max) to V(max) and says
// whether it did.
func capVerbosity(opts *zap.Options, maxV int8) bool {
	lvl, ok := opts.Level.(uberzap.AtomicLevel)
	if !ok || lvl.Level() >= zapcore.Level(-maxV) {
		return false
	}
	lvl.SetLevel(zapcore.Level(-maxV))
	return true
}

// restConfig loads the kubeconfig from --kubeconfig when given, otherwise from the
// usual places ($KUBECONFIG, in-cluster, ~/.kube/config) as kubectl does.
func restConfig(path string) (*rest.Config, error) {
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	return cfg, nil
}
