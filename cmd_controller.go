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

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	goruntime "runtime"
	"slices"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/servicekey-operator/servicekey-operator/controllers"
)

// controllerFlags are the controller subcommand's flags.
type controllerFlags struct {
	common
	metricsAddr      string
	probeAddr        string
	leaderElect      bool
	leaderElectionNS string
	leaderElectionID string
	tokenURI         string
	workers          int
	signingSecret    string
	signingRef       types.NamespacedName // parsed signingSecret; empty: not managed
	signing          controllers.SigningPolicy
	poolSizes        string
	poolSizeList     []int32 // parsed poolSizes
	poolDepth        int
}

func parseControllerFlags(args []string, stderr io.Writer) (*controllerFlags, error) {
	f := &controllerFlags{}
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.bind(fs)
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 disables it")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz probes")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "elect a leader so only one replica reconciles at a time")
	fs.StringVar(&f.leaderElectionNS, "leader-election-namespace", "", "namespace of the leader-election Lease; default: the pod's namespace")
	fs.StringVar(&f.leaderElectionID, "leader-election-id", "controller.servicekey.dev", "name of the leader-election Lease")
	fs.StringVar(&f.tokenURI, "token-uri", "", "token endpoint URL written into key files (token_uri), e.g. https://token.example.com/oauth2/token")
	fs.IntVar(&f.workers, "max-concurrent-reconciles", goruntime.NumCPU(), "ServiceKeys reconciled in parallel (key generation is CPU-bound)")
	fs.StringVar(&f.signingSecret, "signing-key-secret", "", "namespace/name of the token server's signing-key Secret to manage (empty: not managed)")
	fs.StringVar(&f.signing.Algorithm, "signing-key-algorithm", "ES256", "algorithm of the token server's signing keys: ES256 or RS256")
	fs.DurationVar(&f.signing.Every, "signing-key-rotation", 720*time.Hour, "rotation period of the token server's signing keys")
	fs.DurationVar(&f.signing.MaxTokenTTL, "max-access-token-ttl", time.Hour, "the token server's --max-access-token-ttl: how long a previous signing key stays published")
	fs.StringVar(&f.poolSizes, "key-pool-sizes", "2048,4096", "RSA key sizes kept pre-generated in memory for new ServiceKeys (empty: none)")
	fs.IntVar(&f.poolDepth, "key-pool-depth", 4, "pre-generated keys kept per size (0: no pool)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := f.parsePool(); err != nil {
		return nil, err
	}
	if err := f.kubeAPI.check(); err != nil {
		return nil, err
	}
	if f.workers < 1 {
		return nil, fmt.Errorf("--max-concurrent-reconciles must be at least 1, got %d", f.workers)
	}
	if f.signing.Algorithm != "ES256" && f.signing.Algorithm != "RS256" {
		return nil, fmt.Errorf("--signing-key-algorithm must be ES256 or RS256, got %q", f.signing.Algorithm)
	}
	if f.signing.Every <= f.signing.MaxTokenTTL {
		return nil, errors.New("--signing-key-rotation must be longer than --max-access-token-ttl")
	}
	if f.signingSecret != "" {
		var err error
		if f.signingRef, err = parseRef("--signing-key-secret", f.signingSecret); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// keySizes are the sizes spec.privateKey.size allows.
var keySizes = []int32{2048, 3072, 4096}

// parsePool checks --key-pool-sizes against the sizes a ServiceKey may ask for.
func (f *controllerFlags) parsePool() error {
	if f.poolDepth < 0 || f.poolDepth > 64 {
		return fmt.Errorf("--key-pool-depth must be between 0 and 64, got %d", f.poolDepth)
	}
	for _, v := range splitList(f.poolSizes) {
		bits, err := strconv.ParseInt(v, 10, 32)
		if err != nil || !slices.Contains(keySizes, int32(bits)) {
			return fmt.Errorf("--key-pool-sizes: %q is not a ServiceKey key size %v", v, keySizes)
		}
		f.poolSizeList = append(f.poolSizeList, int32(bits))
	}
	return nil
}

// setupReconcilers registers the ServiceKey and ServiceKeyPolicy reconcilers.
func setupReconcilers(mgr ctrl.Manager, f *controllerFlags, m *controllers.Metrics) error {
	pool := controllers.NewKeyPool(controllers.RSAKeys{}, f.poolSizeList, f.poolDepth, ctrl.Log.WithName("key-pool"))
	if err := mgr.Add(pool); err != nil {
		return fmt.Errorf("add the key pool: %w", err)
	}
	for _, c := range pool.Collectors() {
		if err := crmetrics.Registry.Register(c); err != nil {
			return fmt.Errorf("register key pool metrics: %w", err)
		}
	}
	r := &controllers.ServiceKeyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("servicekey-operator"),
		Clock:     clock.RealClock{},
		Keys:      pool,
		Config:    controllers.Config{TokenURI: f.tokenURI},
		Metrics:   m,
	}
	if err := r.SetupWithManager(mgr, f.workers); err != nil {
		return err
	}
	pr := &controllers.PolicyReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("servicekey-operator")}
	if err := pr.SetupWithManager(mgr); err != nil {
		return err
	}
	return nil
}

// runController runs the controller manager until it is stopped.
func runController(f *controllerFlags, log logr.Logger) error {
	cfg, err := restConfig(f.kubeconfig, f.kubeAPI)
	if err != nil {
		return err
	}
	scheme, err := newScheme()
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	if err := servePprof(ctx, f.pprofAddr, log); err != nil {
		return err
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
	if err := setupReconcilers(mgr, f, m); err != nil {
		return err
	}
	if f.signingRef.Name != "" {
		sm := &controllers.SigningKeyManager{
			Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Secret: f.signingRef,
			Policy: f.signing, Clock: clock.RealClock{}, Log: ctrl.Log.WithName("signing-keys"),
		}
		if err := sm.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add readiness check: %w", err)
	}
	log.Info("starting controller manager")
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}
