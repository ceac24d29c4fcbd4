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
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	goruntime "runtime"

	"net/netip"
	"strings"
	"time"

	"github.com/go-logr/logr"
	uberzap "go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
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
	"github.com/servicekey-operator/servicekey-operator/client"
	"github.com/servicekey-operator/servicekey-operator/controllers"
	"github.com/servicekey-operator/servicekey-operator/tokenserver"
)

const usage = `Usage: servicekey-operator <command> [flags]

Commands:
  controller     run the ServiceKey controller (key pairs, Secrets, status)
  token-server   run the OAuth 2.0 token server (RFC 7523 grants -> RFC 9068 access tokens)
  token          print an access token for a key file (like gcloud auth print-access-token)

Run 'servicekey-operator <command> -h' for a command's flags.
`

// exitUsage is the exit code for a command line that cannot be understood.
const exitUsage = 2

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "controller":
		return runController(args[1:], stderr)
	case "token-server":
		return runTokenServer(args[1:], stderr)
	case "token":
		return runToken(args[1:], stdout, stderr)
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
	common
	metricsAddr      string
	probeAddr        string
	leaderElect      bool
	leaderElectionNS string
	leaderElectionID string
	tokenURI         string
	allowCustomSubj  bool
	workers          int
	signingSecret    string
	signing          controllers.SigningPolicy
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
	fs.BoolVar(&f.allowCustomSubj, "allow-custom-subjects", false, "allow spec.subject to name identities other than system:servicekey:<namespace>:<name>")
	fs.IntVar(&f.workers, "max-concurrent-reconciles", goruntime.NumCPU(), "ServiceKeys reconciled in parallel (key generation is CPU-bound)")
	fs.StringVar(&f.signingSecret, "signing-key-secret", "", "namespace/name of the token server's signing-key Secret to manage (empty: not managed)")
	fs.StringVar(&f.signing.Algorithm, "signing-key-algorithm", "ES256", "algorithm of the token server's signing keys: ES256 or RS256")
	fs.DurationVar(&f.signing.Every, "signing-key-rotation", 720*time.Hour, "rotation period of the token server's signing keys")
	fs.DurationVar(&f.signing.MaxTokenTTL, "max-access-token-ttl", time.Hour, "the token server's --max-access-token-ttl: how long a previous signing key stays published")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
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
	log := f.logger("setup")

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
	scheme, err := newScheme()
	if err != nil {
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
	if f.signingSecret != "" {
		ns, name, ok := strings.Cut(f.signingSecret, "/")
		if !ok || ns == "" || name == "" {
			return errors.New("--signing-key-secret must be namespace/name")
		}
		if err := mgr.Add(&controllers.SigningKeyManager{
			Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Secret: types.NamespacedName{Namespace: ns, Name: name},
			Policy: f.signing, Clock: clock.RealClock{}, Log: ctrl.Log.WithName("signing-keys"),
		}); err != nil {
			return fmt.Errorf("add signing-key manager: %w", err)
		}
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

// common are the flags of both servers: where the API server is, and logging.
type common struct {
	kubeconfig string
	zapOpts    zap.Options
}

func (c *common) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "path to a kubeconfig; default: $KUBECONFIG, in-cluster config, ~/.kube/config")
	c.zapOpts.BindFlags(fs)
}

// logger installs the process logger, its verbosity capped at V(MaxLogVerbosity),
// and returns a named one.
func (c *common) logger(name string) logr.Logger {
	clamped := capVerbosity(&c.zapOpts, controllers.MaxLogVerbosity)
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&c.zapOpts)))
	log := ctrl.Log.WithName(name)
	if clamped {
		log.Info("log verbosity capped: client-go logs request bodies, which include private keys, above this level",
			"maxVerbosity", controllers.MaxLogVerbosity)
	}
	return log
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

// newScheme knows core types and ServiceKeys.
func newScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register core types: %w", err)
	}
	if err := authv1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register ServiceKey types: %w", err)
	}
	return scheme, nil
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

// tokenServerFlags are the token-server subcommand's flags.
type tokenServerFlags struct {
	common
	opts           tokenserver.Options
	signingSecret  string
	namespaces     string
	audiences      string
	trustedProxies string
}

func parseTokenServerFlags(args []string, stderr io.Writer) (*tokenServerFlags, error) {
	f := &tokenServerFlags{}
	fs := flag.NewFlagSet("token-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.bind(fs)
	fs.StringVar(&f.opts.Listen, "listen", ":8080", "address of the token server (HTTP; terminate TLS in front of it)")
	fs.StringVar(&f.opts.Issuer, "issuer", "", "issuer identifier (RFC 8414), e.g. https://token.example.com (required)")
	fs.StringVar(&f.opts.TokenURL, "token-url", "", "public URL of the token endpoint; default: <issuer>/oauth2/token")
	fs.StringVar(&f.signingSecret, "signing-key-secret", tokenserver.DefaultSigningSecret, "namespace/name of the signing-key Secret (the generated RBAC names the default)")
	fs.StringVar(&f.namespaces, "namespaces", "", "comma-separated namespaces whose ServiceKeys are served; default: all")
	fs.StringVar(&f.audiences, "default-audience", "", "comma-separated aud of tokens of ServiceKeys without spec.audiences; default: the issuer")
	fs.StringVar(&f.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs of proxies whose X-Forwarded-For is believed")
	fs.DurationVar(&f.opts.MaxTTL, "max-access-token-ttl", time.Hour, "cap on every ServiceKey's accessTokenTTL")
	fs.IntVar(&f.opts.ReplayCacheSize, "replay-cache-size", 100000, "assertion IDs remembered at once (jti replay protection)")
	fs.Float64Var(&f.opts.RateLimit, "rate-limit", 10, "token requests per second per client (0 disables); excess gets 429 with Retry-After")
	fs.IntVar(&f.opts.RateBurst, "rate-burst", 20, "burst of the per-client rate limit")
	fs.DurationVar(&f.opts.LastUsedGranularity, "last-used-granularity", time.Hour, "write a ServiceKey's status.lastUsedTime at most this often")
	fs.StringVar(&f.opts.MetricsListen, "metrics-bind-address", ":9090", "address of the Prometheus metrics endpoint (empty disables it)")
	fs.StringVar(&f.opts.IntrospectionScope, "introspection-scope", tokenserver.DefaultIntrospectionScope, "scope a caller's access token needs for /oauth2/introspect")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return f, f.complete()
}

// complete checks and converts the flag values into Options.
func (f *tokenServerFlags) complete() error {
	if f.opts.Issuer == "" {
		return errors.New("--issuer is required")
	}
	ns, name, ok := strings.Cut(f.signingSecret, "/")
	if !ok || ns == "" || name == "" {
		return errors.New("--signing-key-secret must be namespace/name")
	}
	f.opts.SigningSecret = types.NamespacedName{Namespace: ns, Name: name}
	f.opts.Namespaces = splitList(f.namespaces)
	f.opts.DefaultAudience = splitList(f.audiences)
	if len(f.opts.DefaultAudience) == 0 {
		f.opts.DefaultAudience = []string{f.opts.Issuer}
	}
	for _, c := range splitList(f.trustedProxies) {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("--trusted-proxies: %w", err)
		}
		f.opts.TrustedProxies = append(f.opts.TrustedProxies, p)
	}
	if f.opts.MaxTTL <= 0 || f.opts.ReplayCacheSize < 1 {
		return errors.New("--max-access-token-ttl and --replay-cache-size must be positive")
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func runTokenServer(args []string, stderr io.Writer) int {
	f, err := parseTokenServerFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "token-server: %v\n", err)
		return exitUsage
	}
	log := f.logger("token-server")
	if err := serveTokens(f, log); err != nil {
		log.Error(err, "token server stopped")
		return 1
	}
	return 0
}

func serveTokens(f *tokenServerFlags, log logr.Logger) error {
	cfg, err := restConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	scheme, err := newScheme()
	if err != nil {
		return err
	}
	f.opts.Clock, f.opts.Log = clock.RealClock{}, log
	ctx := ctrl.SetupSignalHandler()
	running, err := tokenserver.Start(ctx, cfg, scheme, f.opts)
	if err != nil {
		return err
	}
	log.Info("serving", "address", running.Addr.String(), "issuer", f.opts.Issuer, "token_url", running.Server.TokenURL)
	<-ctx.Done()
	return nil
}

// runToken prints an access token obtained with a key file.
func runToken(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key-file", "", "path to key.json (required)")
	scopes := fs.String("scope", "", "comma- or space-separated scopes; default: the key's scopes")
	tokenURL := fs.String("token-url", "", "token endpoint to use instead of the key file's token_uri")
	asJSON := fs.Bool("json", false, "print access_token, token_type, expiry and scope as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if *keyFile == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "token: --key-file is required and no arguments are taken")
		return exitUsage
	}
	src, err := client.NewTokenSource(client.Options{KeyFile: *keyFile, TokenURL: *tokenURL,
		Scopes: strings.FieldsFunc(*scopes, func(r rune) bool { return r == ',' || r == ' ' })})
	if err != nil {
		fmt.Fprintf(stderr, "token: %v\n", err)
		return 1
	}
	tok, err := src.Token()
	if err != nil {
		fmt.Fprintf(stderr, "token: %v\n", err)
		return 1
	}
	if !*asJSON {
		fmt.Fprintln(stdout, tok.AccessToken)
		return 0
	}
	scope, _ := tok.Extra("scope").(string)
	_ = json.NewEncoder(stdout).Encode(map[string]string{"access_token": tok.AccessToken, "token_type": tok.TokenType,
		"expiry": tok.Expiry.UTC().Format(time.RFC3339), "scope": scope})
	return 0
}
